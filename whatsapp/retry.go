package whatsapp

// RetryRule describes how the Client retries one Graph API action.
type RetryRule struct {
	Action           string // "action" of the POST /calls body; "call_permissions" for the GET, "messages" for POST /messages
	Retried          bool   // whether any failure is retried at all
	RetryOn          string // which failures are retried
	NeverRetried     string // which failures are returned at once
	AlreadyIsSuccess bool   // on a retry attempt, an "already ..." refusal counts as success
}

// RetryTable returns the Client's retry policy, for documentation and operator tooling.
//
//	action            retried on                                     returned at once          "already" on retry
//	pre_accept        timeout, connection error, HTTP 5xx, HTTP 429  other 4xx, caller's ctx   success
//	accept            timeout, connection error, HTTP 5xx, HTTP 429  other 4xx, caller's ctx   success
//	reject            timeout, connection error, HTTP 5xx, HTTP 429  other 4xx, caller's ctx   success
//	terminate         timeout, connection error, HTTP 5xx, HTTP 429  other 4xx, caller's ctx   success
//	connect           never                                          everything                n/a
//	call_permissions  timeout, connection error, HTTP 5xx, HTTP 429  other 4xx, caller's ctx   n/a (GET)
//	messages          never                                          everything                n/a
//
// Attempts: 1 + ClientConfig.Retries (default 2 extra); each attempt is bounded by
// ClientConfig.Timeout; waits are Backoff, 2×Backoff, ... (at least Retry-After when the server
// sends one) and all of it is bounded by the caller's ctx: a wait that would outlive the ctx
// deadline is not started and the last error is returned.
//
// Why: pre_accept/accept/reject/terminate name an existing wacid, so repeating them is safe;
// when an earlier attempt did reach Meta and only its answer was lost, Meta refuses the repeat
// with a message saying the call is "already" accepted/rejected/terminated/completed (ref §3.2),
// which means the wanted state was reached. A 4xx other than 429 is a definite refusal and
// repeating it cannot help. connect creates a call: repeating it after a lost answer could
// place a second call or hit 138003 (duplicate call), so its outcome is left to the webhooks
// (ref §2.3–2.5). The call_permissions GET only reads state, so repeating it is harmless.
// POST /messages (call permission requests, ref §4.2) creates a billable message that also
// counts toward the 1/24 h and 2/7 d request limits (ref §4.3): repeating it after a lost
// answer could deliver a second request and burn the user's quota, so it is never retried.
func RetryTable() []RetryRule {
	uic := func(action string) RetryRule {
		return RetryRule{
			Action:           action,
			Retried:          true,
			RetryOn:          "timeout, connection error, HTTP 5xx, HTTP 429",
			NeverRetried:     "HTTP 4xx other than 429, caller's context cancelled or expired",
			AlreadyIsSuccess: true,
		}
	}
	return []RetryRule{
		uic("pre_accept"),
		uic("accept"),
		uic("reject"),
		uic("terminate"),
		{Action: "connect", Retried: false, RetryOn: "never", NeverRetried: "everything: a lost answer is resolved by webhooks"},
		{Action: "call_permissions", Retried: true, RetryOn: "timeout, connection error, HTTP 5xx, HTTP 429",
			NeverRetried: "HTTP 4xx other than 429, caller's context cancelled or expired"},
		{Action: "messages", Retried: false, RetryOn: "never", NeverRetried: "everything: each send is a billable message counted toward the request limits"},
	}
}

// retryRule returns the table row for action; unknown actions are never retried.
func retryRule(action string) RetryRule {
	for _, r := range RetryTable() {
		if r.Action == action {
			return r
		}
	}
	return RetryRule{Action: action, RetryOn: "never", NeverRetried: "everything"}
}
