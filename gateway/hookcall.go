package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/ponte-gw/ponte/config"
	"github.com/ponte-gw/ponte/gateway/route"
	"github.com/ponte-gw/ponte/sip"
)

// ErrHookReject: the routing hook said to decline the call.
var ErrHookReject = errors.New("gateway: the routing hook rejected the call")

// hookOutcome is the hook's answer or why there is none.
type hookOutcome struct {
	reply *HookReply
	err   error
	took  time.Duration
}

// hookHTTP is shared by every call's hook request: connections to the CRM are
// reused; each request has its own deadline.
var hookHTTP = &http.Client{}

// startHook asks the route's hook in the background and returns where its
// outcome arrives; nil when the route has no hook. It runs while pre_accept
// is in flight, so the caller hears ringing and setup is not delayed by it.
func (c *call) startHook(r *route.Router, p route.Plan) <-chan hookOutcome {
	h := r.Config().Hook
	if h == nil || h.URL == "" {
		return nil
	}
	client := &hookClient{url: h.URL, secret: []byte(h.Secret), timeout: h.Timeout.D(), http: hookHTTP}
	now := r.Now()
	local := now
	if hr := r.Config().Hours; hr != nil && hr.Timezone != "" {
		if loc, err := time.LoadLocation(hr.Timezone); err == nil {
			local = now.In(loc)
		}
	}
	last, _, _ := c.g.agents.LastAgent(c.callerKey())
	req := HookRequest{
		CallID: c.id, WACID: c.ev.CallID, Route: r.Name(),
		CallerNumber: c.callerKeyNumber(), CallerBSUID: c.ev.FromUserID, CallerName: c.ev.ContactName,
		PhoneNumberID: c.ev.PhoneNumberID, BusinessNumber: c.ev.DisplayPhoneNumber,
		CTAPayload: c.ev.CTAPayload, DeeplinkPayload: c.ev.DeeplinkPayload,
		LocalTime: local, Open: p.Open, LastAgent: last,
	}
	out := make(chan hookOutcome, 1)
	c.g.wg.Add(1)
	go func() {
		defer c.g.wg.Done()
		start := time.Now()
		reply, err := client.ask(c.ctx, req, now)
		out <- hookOutcome{reply: reply, err: err, took: time.Since(start)}
	}()
	return out
}

// callerKeyNumber is the caller's number without "+", empty for a BSUID-only user.
func (c *call) callerKeyNumber() string {
	if c.ev.From == "" {
		return ""
	}
	return c.callerKey()
}

// applyHook folds the hook's answer into the plan: its targets replace the
// route's (sticky agent and targets; the default department stays last), its
// headers go on the INVITE; reject declines the call. A hook that failed
// leaves the static plan, and the record says why.
func (c *call) applyHook(o hookOutcome, plan []attempt) ([]attempt, error) {
	if o.err != nil {
		c.rec.Hook = "static route: " + o.err.Error()
		c.log.Warn("routing hook failed; using the static route", "err", o.err, "took_ms", o.took.Milliseconds())
		return plan, nil
	}
	r := o.reply
	if r.Action == "reject" {
		c.rec.Hook = "rejected: " + r.Reason
		return nil, fmt.Errorf("%w: %s", ErrHookReject, r.Reason)
	}
	for name, v := range r.Headers {
		c.hookHeaders = append(c.hookHeaders, sip.Header{Name: name, Value: v})
	}
	if len(r.Targets) == 0 {
		c.rec.Hook = "static route (hook named no targets)"
		return plan, nil
	}
	var next []attempt
	for i, t := range r.Targets {
		trunk := c.cfg().Trunk(t.Trunk)
		if trunk == nil {
			c.rec.Hook = fmt.Sprintf("static route: hook targets[%d] names unknown trunk %q", i, t.Trunk)
			return plan, nil
		}
		ring := plan[0].target.RingTimeout
		if t.RingTimeout > 0 {
			ring = config.Duration(time.Duration(t.RingTimeout * float64(time.Second)))
		}
		next = append(next, attempt{kind: "hook", trunk: trunk, target: config.Target{
			URI: t.URI, Trunk: t.Trunk, RingTimeout: ring, NoProvisionalTimeout: plan[0].target.NoProvisionalTimeout,
		}})
	}
	if last := plan[len(plan)-1]; last.kind == string(route.KindDefault) {
		next = append(next, last)
	}
	c.rec.Hook = fmt.Sprintf("hook targets (%d)", len(r.Targets))
	return next, nil
}

// waitHook takes the hook's outcome; the hook has its own timeout, the call
// may end first.
func (c *call) waitHook(ch <-chan hookOutcome) (hookOutcome, error) {
	select {
	case o := <-ch:
		return o, nil
	case <-c.ctx.Done():
		return hookOutcome{}, context.Cause(c.ctx)
	}
}
