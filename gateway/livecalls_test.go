package gateway

import (
	"reflect"
	"testing"

	"github.com/ponte-gw/ponte/sip"
)

// TestLiveDialogRoundTrip: every field of sip.DialogState survives the trip
// through the store's row and back, so a field added to one and forgotten in
// the mapping (as the trunk name could have been) fails here.
func TestLiveDialogRoundTrip(t *testing.T) {
	var st sip.DialogState
	v := reflect.ValueOf(&st).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + "-value")
		case reflect.Uint32:
			f.SetUint(uint64(1000 + i))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.ValueOf([]string{"<sip:p1.example;lr>", "<sip:p2.example;lr>"}))
		default:
			t.Fatalf("field %s of kind %s: teach this test to fill it", v.Type().Field(i).Name, f.Kind())
		}
	}
	if got := DialogStateOf(LiveDialogOf(st)); !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip lost fields:\n got %+v\nwant %+v", got, st)
	}
}
