package lockmgr

import (
	"regexp"
	"testing"
)

var (
	resourceSpec = regexp.MustCompile(`^[A-Za-z0-9:_.-]{1,200}$`)
	uuidSpec     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

// FuzzValidation: resource names and lease ids are accepted exactly when
// they match their documented forms, so nothing malformed reaches SQL.
//
//	go test ./lockmgr -run '^$' -fuzz FuzzValidation -fuzztime 60s
func FuzzValidation(f *testing.F) {
	f.Add("account:1", "f82bfdc5-00ef-4896-a880-9256d1629e8e")
	f.Add("", "")
	f.Add("a b", "f82bfdc5-00ef-4896-a880-9256d1629e8")
	f.Add("ü", "f82bfdc5x00ef-4896-a880-9256d1629e8e")
	f.Add("a\n", "F82BFDC5-00EF-4896-A880-9256D1629E8E")
	f.Fuzz(func(t *testing.T, resource, leaseID string) {
		if got, want := ValidResource(resource), resourceSpec.MatchString(resource); got != want {
			t.Fatalf("ValidResource(%q) = %v, want %v", resource, got, want)
		}
		if got, want := ValidLeaseID(leaseID), uuidSpec.MatchString(leaseID); got != want {
			t.Fatalf("ValidLeaseID(%q) = %v, want %v", leaseID, got, want)
		}
		if id := newLeaseID(); !uuidSpec.MatchString(id) || !ValidLeaseID(id) {
			t.Fatalf("newLeaseID() = %q is not a valid lease id", id)
		}
	})
}
