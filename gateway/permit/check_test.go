package permit

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ponte-gw/ponte/store"
	"github.com/ponte-gw/ponte/whatsapp"
)

const user = "5511987654321"

// Arrangements of the ledger, relative to t0 (now).
func (f *fixture) perm(t *testing.T, st store.PermissionState, expires time.Time, source string) {
	t.Helper()
	if err := f.l.SetPermission(ctx, store.Permission{Business: biz, User: user, State: st, Expires: expires,
		Source: source, Updated: t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) requested(t *testing.T, ago time.Duration) {
	t.Helper()
	if err := f.l.AddPermissionRequest(ctx, store.PermissionRequest{Business: biz, User: user, At: t0.Add(-ago),
		Kind: store.RequestTemplate}); err != nil {
		t.Fatal(err)
	}
}

var wacids int

func (f *fixture) called(t *testing.T, u string, ago time.Duration, outcome string) {
	t.Helper()
	wacids++
	w := fmt.Sprintf("wacid.%d", wacids)
	if err := f.l.AddCallAttempt(ctx, store.CallAttempt{Business: biz, User: u, WACID: w, At: t0.Add(-ago), Outcome: store.CallInProgress}); err != nil {
		t.Fatal(err)
	}
	if outcome != store.CallInProgress {
		if err := f.l.SetCallOutcome(ctx, w, outcome, t0.Add(-ago+time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) window(t *testing.T, ago time.Duration) {
	t.Helper()
	if err := f.l.TouchWindow(ctx, biz, user, t0.Add(-ago)); err != nil {
		t.Fatal(err)
	}
}

var (
	metaGone = &whatsapp.APIError{HTTPStatus: 429, Code: 613, Message: "Calls to this api have exceeded the rate limit"}
	auto     = RequestConfig{Auto: true, InteractiveBody: "May we call you about order 12853?",
		TemplateName: "cpr_support", TemplateLanguage: "pt_BR", TemplateParams: []string{"12853"}}
	autoNoTemplate = RequestConfig{Auto: true}
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name      string
		lim       Limits
		setup     func(t *testing.T, f *fixture)
		rc        RequestConfig
		allow     bool
		code      int
		reason    string // substring of the reason phrase
		warning   string // substring of the Warning header
		retry     time.Duration
		requested string
		warn      string // substring of Decision.Warn; "" means none
		sends     int
		gets      int
		after     store.PermissionState // ledger state afterwards; "" not checked
	}{
		// Permission states.
		{name: "none: Meta says no_permission", code: 403, reason: "No WhatsApp call permission", warning: `399 ponte "no call permission`,
			gets: 1, after: store.PermissionNone},
		{name: "temporary (Meta)", setup: func(t *testing.T, f *fixture) { f.g.set(user, granted("temporary", t0.Add(72*time.Hour))) },
			allow: true, gets: 1, after: store.PermissionTemporary},
		{name: "temporary expired, Meta unreachable", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionTemporary, t0.Add(-time.Minute), sourceAccept)
			f.g.permErr = metaGone
		}, code: 403, reason: "expired", gets: 1},
		{name: "temporary valid, Meta unreachable", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionTemporary, t0.Add(time.Minute), sourceAccept)
			f.g.permErr = metaGone
		}, allow: true, gets: 1},
		{name: "permanent (Meta)", setup: func(t *testing.T, f *fixture) { f.g.set(user, granted("permanent", time.Time{})) },
			allow: true, gets: 1, after: store.PermissionPermanent},
		{name: "revoked by the user: not asked again automatically", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionRevoked, time.Time{}, sourceReject)
			f.window(t, time.Hour)
		}, rc: auto, code: 403, reason: "declined", gets: 1, after: store.PermissionRevoked},
		{name: "revoked automatically: asked again inside the window", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionRevoked, time.Time{}, sourceRevokeAuto)
			f.window(t, time.Hour)
		}, rc: auto, code: 403, reason: "revoked the call permission after unanswered calls; request sent (interactive)",
			warning: "a permission request was sent", requested: "interactive", sends: 1, gets: 1},

		// How the request goes out.
		{name: "inside the window: interactive", setup: func(t *testing.T, f *fixture) { f.window(t, 23*time.Hour) },
			rc: auto, code: 403, reason: "request sent (interactive)", requested: "interactive", sends: 1, gets: 1},
		{name: "window exactly 24 h old: template", setup: func(t *testing.T, f *fixture) { f.window(t, 24*time.Hour) },
			rc: auto, code: 403, reason: "request sent (template)", requested: "template", sends: 1, gets: 1},
		{name: "outside the window without a template", rc: autoNoTemplate, code: 403,
			reason: "outside the 24 h window and no template configured", gets: 1},
		{name: "no request without Auto", setup: func(t *testing.T, f *fixture) { f.window(t, time.Hour) },
			code: 403, reason: "No WhatsApp call permission", gets: 1},

		// Request limits.
		{name: "1 per 24 h", setup: func(t *testing.T, f *fixture) { f.requested(t, 2*time.Hour) },
			rc: auto, code: 403, reason: "request limit reached, next in 22h", gets: 1},
		{name: "2 per 7 days", setup: func(t *testing.T, f *fixture) { f.requested(t, 50*time.Hour); f.requested(t, 26*time.Hour) },
			rc: auto, code: 403, reason: "request limit reached, next in 118h", gets: 1},
		{name: "a connected call resets the request limits", setup: func(t *testing.T, f *fixture) {
			f.requested(t, 50*time.Hour)
			f.requested(t, 26*time.Hour)
			if err := f.l.MarkConnected(ctx, biz, user, t0.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, rc: auto, code: 403, reason: "request sent (template)", requested: "template", sends: 1, gets: 1},
		{name: "Meta's request limit (send_call_permission_request not allowed)", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, &whatsapp.CallPermission{Status: "no_permission", Actions: []whatsapp.PermissionAction{
				{Name: "send_call_permission_request", CanPerform: false, Limits: []whatsapp.ActionLimit{
					{TimePeriod: "PT24H", MaxAllowed: 1, CurrentUsage: 1, Expiration: t0.Add(5 * time.Hour)}}},
				{Name: "start_call"}}})
		}, rc: auto, code: 403, reason: "request limit reached, next in 5h", gets: 1},
		{name: "138009 block in the ledger", setup: func(t *testing.T, f *fixture) {
			if err := f.l.SetPermission(ctx, store.Permission{Business: biz, User: user, State: store.PermissionNone,
				Updated: t0.Add(-time.Hour), RequestsBlockedUntil: t0.Add(3 * time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}, rc: auto, code: 403, reason: "request limit reached, next in 3h", gets: 1},

		// Call limits: decided before Meta is asked.
		{name: "100 connected calls in 24 h", setup: func(t *testing.T, f *fixture) {
			for i := range 100 {
				f.called(t, user, 23*time.Hour-time.Duration(i)*time.Minute, store.CallConnected)
			}
		}, code: 480, reason: "Connected-call limit", warning: "limit of 100 connected calls", retry: time.Hour},
		{name: "99 connected calls", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			for i := range 99 {
				f.called(t, user, 23*time.Hour-time.Duration(i)*time.Minute, store.CallConnected)
			}
		}, allow: true, gets: 1},
		{name: "connected-call limit lowered to 5 (Meta's old value)", lim: Limits{ConnectedPer24h: 5}, setup: func(t *testing.T, f *fixture) {
			for _, ago := range []time.Duration{20, 10, 5, 3, 1} {
				f.called(t, user, ago*time.Hour, store.CallConnected)
			}
		}, code: 480, retry: 4 * time.Hour},
		{name: "call initiations per business number", lim: Limits{InitiationsPer24h: 3}, setup: func(t *testing.T, f *fixture) {
			f.called(t, "5511900000001", 20*time.Hour, store.CallFailed)
			f.called(t, "5511900000002", 10*time.Hour, store.CallConnected)
			f.called(t, "5511900000003", time.Hour, store.CallUnanswered)
		}, code: 480, reason: "call-initiation limit reached (3 per 24 h); retry in 4h", retry: 4 * time.Hour},
		{name: "call in progress", setup: func(t *testing.T, f *fixture) { f.called(t, user, 30*time.Second, store.CallInProgress) },
			code: 486, reason: "Call in progress", warning: "already in progress"},
		{name: "stale call in progress is ignored", setup: func(t *testing.T, f *fixture) {
			f.called(t, user, 11*time.Minute, store.CallInProgress)
			f.g.set(user, granted("permanent", time.Time{}))
		}, allow: true, gets: 1},

		// The unanswered run.
		{name: "1 unanswered: no warning", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			f.called(t, user, time.Hour, store.CallUnanswered)
		}, allow: true, gets: 1},
		{name: "2 unanswered: warn", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			f.called(t, user, 2*time.Hour, store.CallUnanswered)
			f.called(t, user, time.Hour, store.CallRejected)
		}, allow: true, warn: "2 consecutive unanswered or rejected calls: Meta has asked the user to reconsider", gets: 1},
		{name: "3 unanswered: the next one revokes", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			for _, h := range []time.Duration{3, 2, 1} {
				f.called(t, user, h*time.Hour, store.CallUnanswered)
			}
		}, allow: true, warn: "3 consecutive unanswered or rejected calls: if this one goes unanswered too, Meta revokes", gets: 1},
		{name: "3 unanswered with StopBeforeRevoke", lim: Limits{StopBeforeRevoke: true}, setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			for _, h := range []time.Duration{3, 2, 1} {
				f.called(t, user, h*time.Hour, store.CallUnanswered)
			}
		}, code: 403, reason: "3 unanswered WhatsApp calls in a row", gets: 1},
		{name: "failed calls and an older run do not count", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, granted("permanent", time.Time{}))
			f.called(t, user, 5*time.Hour, store.CallUnanswered)
			f.called(t, user, 4*time.Hour, store.CallUnanswered)
			f.called(t, user, 3*time.Hour, store.CallConnected)
			if err := f.l.MarkConnected(ctx, biz, user, t0.Add(-3*time.Hour+time.Minute)); err != nil {
				t.Fatal(err)
			}
			f.called(t, user, 2*time.Hour, store.CallFailed)
			f.called(t, user, time.Hour, store.CallUnanswered)
		}, allow: true, gets: 1},

		// Meta's start_call.
		{name: "start_call limited until a time", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, &whatsapp.CallPermission{Status: "temporary", Expiration: t0.Add(48 * time.Hour), Actions: []whatsapp.PermissionAction{
				{Name: "start_call", CanPerform: false, Limits: []whatsapp.ActionLimit{
					{TimePeriod: "PT24H", MaxAllowed: 100, CurrentUsage: 100, Expiration: t0.Add(90 * time.Minute)}}}}})
		}, code: 480, reason: "retry in 1h30m", retry: 90 * time.Minute, gets: 1, after: store.PermissionTemporary},
		{name: "start_call refused without a limit", setup: func(t *testing.T, f *fixture) {
			f.g.set(user, &whatsapp.CallPermission{Status: "permanent", Actions: []whatsapp.PermissionAction{{Name: "start_call"}}})
		}, code: 403, reason: "does not allow calling", gets: 1},

		// Meta's answer overrides the ledger.
		{name: "ledger permanent, Meta no_permission", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionPermanent, time.Time{}, sourceAccept)
		}, code: 403, reason: "No WhatsApp call permission", gets: 1, after: store.PermissionNone},
		{name: "ledger none, Meta temporary", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionNone, time.Time{}, sourceConnect138006)
			f.g.set(user, granted("temporary", t0.Add(5*24*time.Hour)))
		}, allow: true, gets: 1, after: store.PermissionTemporary},

		// 613 (or any failure of the GET) falls back to the ledger.
		{name: "613, ledger permanent", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionPermanent, time.Time{}, sourceAccept)
			f.g.permErr = metaGone
		}, allow: true, gets: 1},
		{name: "613, pair never seen: Meta decides on connect", setup: func(t *testing.T, f *fixture) { f.g.permErr = metaGone },
			rc: auto, allow: true, warn: "not verified", gets: 1},
		{name: "613, ledger none", setup: func(t *testing.T, f *fixture) {
			f.perm(t, store.PermissionNone, time.Time{}, sourceMeta)
			f.g.permErr = fmt.Errorf("dial tcp: i/o timeout")
		}, code: 403, gets: 1},
		{name: "138017 on the automatic request: permanent after all", setup: func(t *testing.T, f *fixture) {
			f.g.sendErr = &whatsapp.APIError{HTTPStatus: 400, Code: 138017, Message: "Permanent permission already exists"}
		}, rc: auto, allow: true, warn: "permanent", gets: 1, after: store.PermissionPermanent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ledgers(t, func(t *testing.T, l store.Ledger) {
				f := newFixture(t, l, tc.lim)
				if tc.setup != nil {
					tc.setup(t, f)
				}
				d := f.s.Check(ctx, biz, user, tc.rc)
				if d.Allow != tc.allow || d.SIPCode != tc.code || !strings.Contains(d.Reason, tc.reason) ||
					!strings.Contains(d.Warning, tc.warning) || d.RetryAfter != tc.retry || d.Requested != tc.requested {
					t.Fatalf("decision %+v", d)
				}
				if (tc.warn == "") != (d.Warn == "") || !strings.Contains(d.Warn, tc.warn) {
					t.Fatalf("warn %q, want %q", d.Warn, tc.warn)
				}
				if !d.Allow && !strings.HasPrefix(d.Warning, `399 ponte "`) {
					t.Fatalf("refusal without a Warning: %+v", d)
				}
				if d.SIPCode == 503 {
					t.Fatal("503 is never an answer")
				}
				gets, sends := f.g.counts()
				if gets != tc.gets || sends != tc.sends {
					t.Fatalf("%d GETs and %d sends, want %d and %d", gets, sends, tc.gets, tc.sends)
				}
				if tc.sends > 0 {
					s := f.g.sends[0]
					if s.business != biz || s.to != user {
						t.Fatalf("sent %+v", s)
					}
					switch tc.requested {
					case "interactive":
						if s.req.Template != nil || s.req.Body != tc.rc.InteractiveBody {
							t.Fatalf("interactive request %+v", s.req)
						}
					case "template":
						if tt := s.req.Template; tt == nil || tt.Name != "cpr_support" || tt.Language != "pt_BR" || tt.BodyParams[0] != "12853" {
							t.Fatalf("template request %+v", s.req)
						}
					}
					c, err := l.PairCounters(ctx, biz, user, t0)
					if err != nil || c.RequestsLast24h != 1 || !c.LastRequestAt.Equal(t0) {
						t.Fatalf("request not recorded: %+v %v", c, err)
					}
				}
				if tc.after != "" {
					p, err := l.Permission(ctx, biz, user)
					if err != nil || p.State != tc.after {
						t.Fatalf("ledger afterwards %+v %v, want %s", p, err, tc.after)
					}
				}
			})
		})
	}
}

func TestCheckCachesMetaAnswer(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.set(user, granted("permanent", time.Time{}))
		for range 3 {
			if d := f.s.Check(ctx, biz, user, RequestConfig{}); !d.Allow {
				t.Fatalf("%+v", d)
			}
		}
		if gets, _ := f.g.counts(); gets != 1 {
			t.Fatalf("%d GETs within the cache TTL, want 1", gets)
		}
		f.ck.Add(59 * time.Second)
		f.s.Check(ctx, biz, user, RequestConfig{})
		if gets, _ := f.g.counts(); gets != 1 {
			t.Fatalf("%d GETs at 59 s", gets)
		}
		// The user revokes; the cache is stale at 60 s and Meta's new answer wins.
		f.g.set(user, &whatsapp.CallPermission{Status: "no_permission"})
		f.ck.Add(time.Second)
		if d := f.s.Check(ctx, biz, user, RequestConfig{}); d.Allow || d.SIPCode != 403 {
			t.Fatalf("after TTL: %+v", d)
		}
		if gets, _ := f.g.counts(); gets != 2 {
			t.Fatalf("%d GETs after the TTL, want 2", gets)
		}
		// A permission reply drops the cache at once.
		f.s.OnPermissionReply(ctx, biz, user, whatsapp.PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action"}, f.ck.Now())
		f.g.set(user, granted("permanent", time.Time{}))
		if d := f.s.Check(ctx, biz, user, RequestConfig{}); !d.Allow {
			t.Fatalf("after the reply: %+v", d)
		}
		if gets, _ := f.g.counts(); gets != 3 {
			t.Fatalf("%d GETs after the reply, want 3", gets)
		}
	})
}

// The GET budget is per business number; beyond it the ledger decides.
func TestCheckGetRateLimit(t *testing.T) {
	f := newFixture(t, store.NewMemoryLedger(), Limits{GetRate: 2})
	users := []string{"5511900000001", "5511900000002", "5511900000003"}
	for _, u := range users {
		f.g.set(u, granted("permanent", time.Time{}))
		if err := f.l.SetPermission(ctx, store.Permission{Business: biz, User: u, State: store.PermissionPermanent, Updated: t0}); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		if d := f.s.Check(ctx, biz, u, RequestConfig{}); !d.Allow {
			t.Fatalf("%s: %+v", u, d)
		}
	}
	if gets, _ := f.g.counts(); gets != 2 {
		t.Fatalf("%d GETs in one instant at 2/s, want 2", gets)
	}
	// Another business number has its own budget; half a second refills one.
	f.s.Check(ctx, "other", users[2], RequestConfig{})
	f.ck.Add(500 * time.Millisecond)
	f.s.Check(ctx, biz, users[2], RequestConfig{})
	if gets, _ := f.g.counts(); gets != 4 {
		t.Fatalf("%d GETs, want 4", gets)
	}
}

// Many calls to one user without permission at once: one request.
func TestCheckConcurrentSendsOneRequest(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		var wg sync.WaitGroup
		decisions := make([]Decision, 20)
		for i := range decisions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				decisions[i] = f.s.Check(ctx, biz, user, auto)
			}()
		}
		wg.Wait()
		requested := 0
		for _, d := range decisions {
			if d.Allow || d.SIPCode != 403 {
				t.Fatalf("%+v", d)
			}
			if d.Requested != "" {
				requested++
			}
		}
		if _, sends := f.g.counts(); sends != 1 || requested != 1 {
			t.Fatalf("%d sends, %d decisions say requested; want 1", sends, requested)
		}
	})
}

// Whatever the pattern of calls, no 24 h window ever holds more than 1
// request and no 7-day window more than 2, except across a connected call.
func TestCheckNeverExceedsRequestLimits(t *testing.T) {
	f := newFixture(t, store.NewMemoryLedger(), Limits{})
	rng := rand.New(rand.NewPCG(1, 2))
	var sentAt []time.Time
	for range 2000 {
		f.ck.Add(time.Duration(rng.IntN(6*60)) * time.Minute)
		if rng.IntN(10) == 0 {
			f.s.OnUserActivity(ctx, biz, user, f.ck.Now())
		}
		if d := f.s.Check(ctx, biz, user, auto); d.Requested != "" {
			sentAt = append(sentAt, f.ck.Now())
		}
	}
	if len(sentAt) < 50 {
		t.Fatalf("only %d requests in %v: the policy is too strict", len(sentAt), f.ck.Now().Sub(t0))
	}
	for i, at := range sentAt {
		in24, in7d := 0, 0
		for _, b := range sentAt[:i+1] {
			if at.Sub(b) < 24*time.Hour {
				in24++
			}
			if at.Sub(b) < 7*24*time.Hour {
				in7d++
			}
		}
		if in24 > 1 || in7d > 2 {
			t.Fatalf("request %d at %v: %d in 24 h, %d in 7 days", i, at, in24, in7d)
		}
	}
	if _, sends := f.g.counts(); sends != len(sentAt) {
		t.Fatalf("%d sends, %d decisions", sends, len(sentAt))
	}
}

func TestCheckDefaultInitiationLimit(t *testing.T) {
	l := store.NewMemoryLedger()
	f := newFixture(t, l, Limits{})
	f.g.set(user, granted("permanent", time.Time{}))
	for i := range 10000 {
		u := fmt.Sprintf("55119%08d", i)
		if err := l.AddCallAttempt(ctx, store.CallAttempt{Business: biz, User: u, At: t0.Add(-23*time.Hour + time.Duration(i)*time.Second),
			Outcome: store.CallFailed}); err != nil {
			t.Fatal(err)
		}
	}
	d := f.s.Check(ctx, biz, user, RequestConfig{})
	if d.Allow || d.SIPCode != 480 || d.RetryAfter != time.Hour {
		t.Fatalf("at 10,000: %+v", d)
	}
	f.ck.Add(time.Hour)
	if d := f.s.Check(ctx, biz, user, RequestConfig{}); !d.Allow {
		t.Fatalf("after the oldest aged out: %+v", d)
	}
}

// Four unanswered calls: Meta revokes by webhook; ponte then refuses and
// asks Meta again.
func TestFourUnansweredThenMetaRevokes(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.set(user, granted("temporary", t0.Add(6*24*time.Hour)))
		warns := []string{"", "", "2 consecutive", "3 consecutive"}
		for i := range 4 {
			d := f.s.Check(ctx, biz, user, auto)
			if !d.Allow || (warns[i] == "") != (d.Warn == "") || !strings.Contains(d.Warn, warns[i]) {
				t.Fatalf("call %d: %+v", i+1, d)
			}
			w := fmt.Sprintf("wacid.u%d", i)
			if err := f.s.CallStarted(ctx, biz, user, w); err != nil {
				t.Fatal(err)
			}
			f.ck.Add(time.Minute)
			f.s.CallEnded(ctx, biz, user, w, store.CallUnanswered)
			f.ck.Add(time.Minute)
		}
		gets, _ := f.g.counts()
		f.g.set(user, &whatsapp.CallPermission{Status: "no_permission"})
		f.s.OnPermissionReply(ctx, biz, user, whatsapp.PermissionReply{Response: "reject", Source: "automatic"}, f.ck.Now())
		if p, _ := l.Permission(ctx, biz, user); p.State != store.PermissionRevoked || p.Source != sourceRevokeAuto {
			t.Fatalf("after Meta's revoke: %+v", p)
		}
		f.window(t, -f.ck.Now().Sub(t0)+time.Minute) // the user wrote a minute ago
		d := f.s.Check(ctx, biz, user, auto)
		if d.Allow || d.SIPCode != 403 || !strings.Contains(d.Reason, "revoked") || d.Requested != "interactive" {
			t.Fatalf("after the revoke: %+v", d)
		}
		if g2, _ := f.g.counts(); g2 != gets+1 {
			t.Fatalf("Meta not asked again after the revoke (%d GETs, before %d)", g2, gets)
		}
	})
}

// A number dialled with Brazil's ninth digit reaches the wa_id's entry.
func TestCheckAliasHitsTheSameEntry(t *testing.T) {
	const dialled, waID = "5511987654321", "551187654321"
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.permErr = metaGone // the ledger decides
		f.s.OnPermissionReply(ctx, biz, waID, whatsapp.PermissionReply{Response: "accept", IsPermanent: true, Source: "user_action",
			ContextID: "wamid.x"}, t0)
		u, _, _ := f.s.Normalize("+55 11 98765-4321", "55")
		if d := f.s.Check(ctx, biz, u, RequestConfig{}); !d.Allow || !strings.Contains(d.Warn, "not verified") {
			t.Fatalf("before the alias is known: %+v (the dialled number is another, unknown entry: Meta decides)", d)
		}
		f.s.LearnAlias(ctx, dialled, waID)
		u, _, _ = f.s.Normalize("+55 11 98765-4321", "55")
		if u != waID {
			t.Fatalf("normalized to %q", u)
		}
		if err := f.s.CallStarted(ctx, biz, dialled, "wacid.a1"); err != nil {
			t.Fatal(err)
		}
		if d := f.s.Check(ctx, biz, dialled, RequestConfig{}); d.SIPCode != 486 {
			t.Fatalf("the call to the dialled number is not seen under the wa_id: %+v", d)
		}
		f.s.CallEnded(ctx, biz, dialled, "wacid.a1", store.CallConnected)
		st, err := f.s.Status(ctx, biz, dialled)
		if err != nil || st.User != waID || st.State != "permanent" || st.ConnectedLast24h != 1 || !st.Window.Open {
			t.Fatalf("status %+v %v", st, err)
		}
	})
}

func TestCheckBSUIDAsksByRecipient(t *testing.T) {
	const bsuid = "US.13491208655302741918"
	f := newFixture(t, store.NewMemoryLedger(), Limits{})
	f.g.set(bsuid, granted("permanent", time.Time{}))
	if d := f.s.Check(ctx, biz, bsuid, RequestConfig{}); !d.Allow {
		t.Fatalf("%+v", d)
	}
	if len(f.g.bsuid) != 1 || f.g.bsuid[0] != bsuid {
		t.Fatalf("recipient %v", f.g.bsuid)
	}
}

// A connected call resets Meta's request limits: the cached answer that
// said "no request now" is dropped, and the next Check asks again.
func TestConnectedCallDropsCachedRequestLimit(t *testing.T) {
	ledgers(t, func(t *testing.T, l store.Ledger) {
		f := newFixture(t, l, Limits{})
		f.g.set(user, &whatsapp.CallPermission{Status: "no_permission", Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", CanPerform: false, Limits: []whatsapp.ActionLimit{
				{TimePeriod: "PT24H", MaxAllowed: 1, CurrentUsage: 1, Expiration: t0.Add(20 * time.Hour)}}},
			{Name: "start_call"}}})
		if d := f.s.Check(ctx, biz, user, auto); d.Requested != "" || !strings.Contains(d.Reason, "request limit") {
			t.Fatalf("first: %+v", d)
		}
		// The user calls in and talks (UIC): limits reset, window open.
		f.ck.Add(10 * time.Second)
		f.s.OnUserActivity(ctx, biz, user, f.ck.Now())
		f.s.CallEnded(ctx, biz, user, "wacid.uic1", store.CallConnected)
		f.g.set(user, &whatsapp.CallPermission{Status: "no_permission", Actions: []whatsapp.PermissionAction{
			{Name: "send_call_permission_request", CanPerform: true}, {Name: "start_call"}}})
		f.ck.Add(10 * time.Second)
		if d := f.s.Check(ctx, biz, user, auto); d.Requested != "interactive" {
			t.Fatalf("after the connected call: %+v", d)
		}
		if gets, sends := f.g.counts(); gets != 2 || sends != 1 {
			t.Fatalf("%d GETs, %d sends", gets, sends)
		}
	})
}
