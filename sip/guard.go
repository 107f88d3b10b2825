package sip

import (
	"runtime/debug"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// routes is the request table NewUA registers with sipgo, every handler
// behind guard, and the one the in-process fuzz target
// (server_fuzz_test.go) dispatches through: what the fuzzer exercises is
// what the wire reaches. The second result handles every other method.
func (u *UA) routes() (map[sip.RequestMethod]sipgo.RequestHandler, sipgo.RequestHandler) {
	m := map[sip.RequestMethod]sipgo.RequestHandler{
		sip.OPTIONS:  u.serveOptions,    // H-SIPSEC: through the scanner gate (scanner.go)
		sip.REGISTER: u.serveNotAllowed, // H-SIPSEC: ponte is no registrar: 405 with Allow, or nothing
		sip.INVITE:   u.handleInvite,
		sip.ACK:      u.handleAck,
		sip.BYE:      u.handleBye,
		sip.INFO:     u.handleInfo,
		sip.UPDATE:   u.handleUpdate,
		sip.REFER:    u.handleRefer,
		sip.CANCEL:   u.serveCancel,
	}
	for k, h := range m {
		m[k] = u.guard(h)
	}
	return m, u.guard(u.serveNotAllowed) // H-SIPSEC: other methods likewise
}

// serveCancel answers a CANCEL that matched no INVITE transaction (RFC 3261
// §9.2): 481, unless it is for a call ponte answered whose transaction
// ended with the 2xx (TCP/TLS): 200 and no effect (H-UAS, server.go).
func (u *UA) serveCancel(req *sip.Request, tx sip.ServerTransaction) {
	if u.inboundServer().cancelAnswered(req) {
		respond(tx, req, 200, "OK", nil)
		return
	}
	respond(tx, req, 481, "Call/Transaction Does Not Exist", nil)
}

// guard recovers a panic in a request handler. sipgo runs each request on
// its own goroutine and recovers nothing, so one malformed message that
// trips a bug would otherwise take every call in the process down with it.
// The request gets 500 (RFC 3261 §21.5.1; an ACK gets no response, §17.2.1;
// if a final response already went out the transaction ignores this one),
// the panic is counted (ServerStats.Panics) and logged with its stack.
func (u *UA) guard(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		defer func() {
			p := recover()
			if p == nil {
				return
			}
			u.panics.Add(1)
			u.log.Error("sip: request handler panicked", "method", string(req.Method),
				"call_id", callIDOf(req), "source", req.Source(), "panic", p, "stack", string(debug.Stack()))
			if req.Method != sip.ACK && tx != nil {
				respond(tx, req, 500, "Server Internal Error", nil)
			}
		}()
		h(req, tx)
	}
}
