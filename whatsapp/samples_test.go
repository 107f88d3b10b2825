package whatsapp

import "strings"

// Meta's webhook samples from /work/shared/reference/whatsapp-calling-api.md, with SDP
// placeholders kept as in the reference. Used by the parser tests and as fuzz seeds.

const sampleUICConnect = `{ "object": "whatsapp_business_account",
  "entry": [{ "id": "<WHATSAPP_BUSINESS_ACCOUNT_ID>", "changes": [{ "field": "calls", "value": {
    "messaging_product": "whatsapp",
    "metadata": { "display_phone_number": "16315553601", "phone_number_id": "<PHONE_NUMBER_ID>" },
    "contacts": [{ "profile": { "name": "<CALLEE_NAME>" }, "wa_id": "16315553602" }],
    "calls": [{
      "id": "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh",
      "to": "16315553601", "from": "16315553602",
      "event": "connect", "timestamp": "1671644824",
      "direction": "USER_INITIATED",
      "deeplink_payload": "deeplink_payload", "cta_payload": "cta_payload",
      "session": { "sdp_type": "offer", "sdp": "<<RFC 8866 SDP>>" } }] } }] }] }`

const sampleBICConnect = `{ "object": "whatsapp_business_account",
  "entry": [{ "id": "<WABA_ID>", "changes": [{ "field": "calls", "value": {
    "messaging_product": "whatsapp",
    "metadata": { "display_phone_number": "16315553601", "phone_number_id": "<PHONE_NUMBER_ID>" },
    "contacts": [{ "wa_id": "16315553602" }],
    "calls": [{
      "id": "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh",
      "to": "16315553601", "from": "16315553602",
      "event": "connect", "timestamp": "1671644824",
      "direction": "BUSINESS_INITIATED",
      "session": { "sdp_type": "answer", "sdp": "<<RFC 8866 SDP>>" } }] } }] }] }`

// sampleStatus wraps the §2.4 statuses[] element in the calls envelope.
const sampleStatus = `{ "object": "whatsapp_business_account",
  "entry": [{ "id": "<WABA_ID>", "changes": [{ "field": "calls", "value": {
    "messaging_product": "whatsapp",
    "metadata": { "display_phone_number": "16315553601", "phone_number_id": "<PHONE_NUMBER_ID>" },
    "statuses": [{
      "id": "wacid.ABGGFjFVU2AfAgo6V",
      "timestamp": "1671644824",
      "type": "call",
      "status": "RINGING",
      "recipient_id": "163155536021",
      "recipient_user_id": "<BSUID>",
      "recipient_parent_user_id": "<PARENT_BSUID>",
      "biz_opaque_callback_data": "random_string"
    }] } }] }] }`

// sampleTerminate wraps the §2.5 terminate element; status is one of the documented forms.
const sampleTerminate = `{ "object": "whatsapp_business_account",
  "entry": [{ "id": "<WABA_ID>", "changes": [{ "field": "calls", "value": {
    "messaging_product": "whatsapp",
    "metadata": { "display_phone_number": "16315553601", "phone_number_id": "<PHONE_NUMBER_ID>" },
    "calls": [{
      "id": "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh",
      "to": "16315553601", "from": "16315553602",
      "event": "terminate",
      "direction": "BUSINESS_INITIATED",
      "biz_opaque_callback_data": "random_string",
      "timestamp": "1671644824",
      "status" : ["Failed", "Completed"],
      "start_time" : "1671644824",
      "end_time" : "1671644944",
      "duration" : 120
    }],
    "errors": [{ "code": 138021, "message": "ERROR_TITLE", "href": "ERROR_HREF",
                 "error_data": { "details": "ERROR_DETAILS" } }] } }] }] }`

// samplePermissionReply wraps the §2.8 messages[] element in the messages envelope.
const samplePermissionReply = `{ "object": "whatsapp_business_account",
  "entry": [{ "id": "<WABA_ID>", "changes": [{ "field": "messages", "value": {
    "messaging_product": "whatsapp",
    "metadata": { "display_phone_number": "16315553601", "phone_number_id": "<PHONE_NUMBER_ID>" },
    "contacts": [{ "profile": { "name": "Ana" }, "wa_id": "16315553602", "user_id": "US.1349" }],
    "messages": [{
      "from": "16315553602", "from_user_id": "US.1349",
      "id": "wamid.sH0kFlaCGg0xcvZbgmg90lHrg2dL", "timestamp": "1745343479",
      "context": { "from": "16315553602", "id": "wamid.gBGGFlaCmZ9plHrf2Mh-o" },
      "type": "interactive",
      "interactive": { "type": "call_permission_reply",
        "call_permission_reply": { "response": "accept", "is_permanent": false,
          "expiration_timestamp": "1745948279", "response_source": "user_action" } } }] } }] }] }`

// callsBody wraps call elements (JSON objects, comma separated) in a calls-field envelope.
func callsBody(elements ...string) string {
	return `{"object":"whatsapp_business_account","entry":[{"id":"waba","changes":[{"field":"calls","value":{` +
		`"messaging_product":"whatsapp","metadata":{"display_phone_number":"16315553601","phone_number_id":"pnid"},` +
		`"calls":[` + strings.Join(elements, ",") + `]}}]}]}`
}

// valueBody wraps a raw change value under field.
func valueBody(field, value string) string {
	return `{"object":"whatsapp_business_account","entry":[{"id":"waba","changes":[{"field":"` + field +
		`","value":` + value + `}]}]}`
}

var fuzzSeeds = []string{
	sampleUICConnect, sampleBICConnect, sampleStatus, sampleTerminate, samplePermissionReply,
	valueBody("account_update", `{"event":"ACCOUNT_VIOLATION","violation_info":{"violation_type":"LOW_BUSINESS_INITIATED_CALLING_QUALITY"}}`),
	callsBody(`{"id":"wacid.X","event":"call_recording_available","timestamp":1671644824}`),
	callsBody(`{"id":"wacid.X","event":"terminate","status":"completed","duration":"21"}`),
	valueBody("messages", `{"contacts":[{"wa_id":"1","user_id":"US.1"}],"messages":[{"from":"1","id":"wamid.1","type":"text","text":{"body":"hi"}}],`+
		`"statuses":[{"id":"wamid.0","status":"failed","recipient_id":"1","errors":[{"code":131026}]}]}`),
	`{}`, `[]`, `{"entry":"x"}`, `{"entry":[{"changes":[{"field":"calls","value":{"calls":[1,"a",null]}}]}]}`,
}
