// Package jobspec reads the job `vmm run` puts in the initramfs
// (guestabi.SpecPath) in the guest. It is apart from package guestabi,
// which vmm links too, because it needs encoding/json and vmm does not
// (guestabi.EncodeSpec writes the JSON by hand).
package jobspec

import (
	"encoding/json"
	"fmt"

	"github.com/vmm-dev/vmm/guestabi"
)

// Parse reads a job description and checks it (Spec.Validate).
func Parse(b []byte) (guestabi.Spec, error) {
	var s guestabi.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return s, fmt.Errorf("job spec: %w", err)
	}
	return s, nil
}
