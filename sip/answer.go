package sip

// AnswerHeader returns the values of a header of the 2xx that established
// the dialog (name matched case-insensitively, RFC 3261 §7.3.1), in order;
// nil before the answer. The gateway reads who answered from it (X-Agent,
// P-Asserted-Identity, Contact).
func (d *Dialog) AnswerHeader(name string) []string {
	d.mu.Lock()
	res := d.answerRes
	d.mu.Unlock()
	if res == nil {
		return nil
	}
	var out []string
	for _, h := range res.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}
