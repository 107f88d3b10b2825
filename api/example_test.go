package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ponte-gw/ponte/api"
	"github.com/ponte-gw/ponte/store"
)

// Example shows the wiring cmd/ponte and the gateway need: open the store,
// close what a restart cut, record a call step by step with its events, serve
// /api and deliver events.
func Example() {
	ctx := context.Background()
	// store.OptionsFromConfig(cfg) builds these from the config file.
	st, err := store.Open(ctx, store.Options{Driver: "memory", Location: time.UTC, Events: true})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	if _, err := st.CloseInterrupted(ctx, time.Now()); err != nil { // at startup, before any call
		panic(err)
	}

	// The gateway: Create on the connect webhook, Update after each step.
	offered := time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC)
	c := &store.Call{ID: "pc-1", WACID: "wacid.X", Direction: store.Inbound, Offered: offered,
		Caller: store.Party{Number: "5511987654321", Name: "Ana"}, PhoneNumberID: "123", Route: "support"}
	_ = st.Create(ctx, c, store.EventOffered)
	c.Attempts = append(c.Attempts, store.Attempt{Target: "sip:100@pbx", Started: offered.Add(time.Second),
		Ended: offered.Add(4 * time.Second), Result: "200", Agent: "100"})
	c.Answered, c.AnsweredBy = offered.Add(4*time.Second), "100"
	_ = st.Update(ctx, c, store.EventAnswered)
	c.Ended, c.Outcome, c.EndReason, c.EndedBy = offered.Add(64*time.Second), store.OutcomeAnswered, "completed", store.EndedByCaller
	_ = st.Update(ctx, c, store.EventEnded)
	fmt.Println(c.Protocol, c.Outcome, c.Duration)

	// Sticky agent on the user's next call.
	agent, _, _ := st.LastAgent(ctx, "5511987654321", offered.Add(-24*time.Hour))
	fmt.Println("last agent:", agent)

	// The admin listener mounts the API.
	adm := http.NewServeMux()
	adm.Handle("/api/", api.New(api.Config{Token: "0123456789abcdef-token", Calls: st}))
	req := httptest.NewRequest("GET", "/api/calls/"+c.Protocol, nil)
	req.Header.Set("Authorization", "Bearer 0123456789abcdef-token")
	w := httptest.NewRecorder()
	adm.ServeHTTP(w, req)
	fmt.Println("GET /api/calls/{protocol}:", w.Code)

	// cmd/ponte runs the deliverer when events.url is set:
	//	d, _ := api.NewDeliverer(api.DelivererConfig{URL: cfg.Events.URL, Secret: cfg.Events.Secret,
	//		Outbox: st, Timeout: cfg.Events.Timeout.D(), MaxBackoff: cfg.Events.MaxBackoff.D(), MaxAge: cfg.Events.MaxAge.D()})
	//	go d.Run(ctx) // stops when ctx is cancelled
	evs, _ := st.Due(ctx, time.Now(), 10)
	fmt.Println("due:", len(evs), evs[0].Type)

	// Output:
	// 2026-1121-0001 answered 1m0s
	// last agent: 100
	// GET /api/calls/{protocol}: 200
	// due: 1 call.offered
}
