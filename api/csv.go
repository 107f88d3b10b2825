package api

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ponte-gw/ponte/store"
)

// csvHeader names the export's columns, in order.
var csvHeader = []string{
	"protocol", "id", "direction", "outcome", "end_reason", "ended_by",
	"caller_number", "caller_bsuid", "caller_name", "business_number", "phone_number_id",
	"route", "mode", "answered_by", "offered", "pre_accepted", "accepted", "answered", "ended",
	"duration_s", "attempts", "targets", "transfers", "meta_status", "meta_errors",
	"wa_codec", "wa_packets_received", "wa_packets_lost", "wa_jitter_ms", "wa_rtt_ms",
	"sip_codec", "sip_packets_received", "sip_packets_lost", "sip_jitter_ms", "sip_rtt_ms",
	"mos", "wacid", "sip_call_id",
}

// csv streams the filtered calls as CSV, a page at a time, so an export of a
// year of calls holds one page in memory.
func (h *handler) csv(w http.ResponseWriter, r *http.Request) {
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	remaining := f.Limit // 0: every matching call
	f.Limit = store.MaxLimit
	if remaining > 0 {
		f.Limit = min(remaining, store.MaxLimit)
	}
	// Fetch the first page before the status line, so a store failure can
	// still be a JSON 500.
	p, err := h.calls.List(r.Context(), f)
	if err != nil {
		h.storeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8; header=present") // RFC 4180 §3
	w.Header().Set("Content-Disposition", `attachment; filename="ponte-calls.csv"`)
	if r.Method == http.MethodHead {
		return
	}
	bw := bufio.NewWriterSize(w, 32<<10)
	defer bw.Flush()
	// UTF-8 BOM: spreadsheet programs otherwise read UTF-8 names as Latin-1.
	bw.WriteString("\uFEFF")
	writeCSVRow(bw, csvHeader)
	for {
		for i := range p.Calls {
			writeCSVRow(bw, csvRecord(&p.Calls[i]))
		}
		if remaining > 0 {
			if remaining -= len(p.Calls); remaining <= 0 {
				return
			}
			f.Limit = min(remaining, store.MaxLimit)
		}
		if p.Next == "" {
			return
		}
		f.Cursor = p.Next
		if p, err = h.calls.List(r.Context(), f); err != nil {
			// The status line is gone; a truncated file is all we can do.
			h.log.Error("api: CSV export cut short", "err", err)
			return
		}
	}
}

// writeCSVRow writes one RFC 4180 record ending in CRLF.
func writeCSVRow(w io.StringWriter, cells []string) {
	for i, c := range cells {
		if i > 0 {
			w.WriteString(",")
		}
		w.WriteString(csvCell(c))
	}
	w.WriteString("\r\n")
}

// csvCell quotes a field as RFC 4180 §2 requires and defuses formula
// injection (OWASP "CSV Injection"): a cell starting with = + - @, a tab or a
// CR is run as a formula by spreadsheet programs, so it gets a leading single
// quote, which makes it text, and is always quoted.
func csvCell(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	inert := false
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		s, inert = "'"+s, true
	}
	if inert || strings.ContainsAny(s, ",\"\r\n") {
		return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	return s
}

func csvTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func csvFloat(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }

func csvUint(v uint64) string { return strconv.FormatUint(v, 10) }

// csvRecord flattens a call into csvHeader's columns.
func csvRecord(c *store.Call) []string {
	targets := make([]string, len(c.Attempts))
	for i, a := range c.Attempts {
		targets[i] = a.Target + " " + a.Result
	}
	transfers := make([]string, len(c.Transfers))
	for i, t := range c.Transfers {
		transfers[i] = t.ReferTo + " " + t.Result
	}
	metaErrors := make([]string, len(c.MetaErrors))
	for i, e := range c.MetaErrors {
		metaErrors[i] = strconv.Itoa(e)
	}
	mos := ""
	if c.Media.MOS > 0 {
		mos = csvFloat(c.Media.MOS, 2)
	}
	wa, sp := c.Media.WhatsApp, c.Media.SIP
	return []string{
		c.Protocol, c.ID, string(c.Direction), string(c.Outcome), c.EndReason, c.EndedBy,
		c.Caller.Number, c.Caller.BSUID, c.Caller.Name, c.BusinessNumber, c.PhoneNumberID,
		c.Route, c.Mode, c.AnsweredBy,
		csvTime(c.Offered), csvTime(c.PreAccepted), csvTime(c.Accepted), csvTime(c.Answered), csvTime(c.Ended),
		csvFloat(c.Duration.Seconds(), 3), strconv.Itoa(len(c.Attempts)), strings.Join(targets, "; "),
		strings.Join(transfers, "; "), c.MetaStatus, strings.Join(metaErrors, " "),
		wa.Codec, csvUint(wa.PacketsReceived), csvUint(wa.PacketsLost), csvFloat(wa.JitterMs, 2), csvFloat(wa.RTTMs, 1),
		sp.Codec, csvUint(sp.PacketsReceived), csvUint(sp.PacketsLost), csvFloat(sp.JitterMs, 2), csvFloat(sp.RTTMs, 1),
		mos, c.WACID, c.SIPCallID,
	}
}
