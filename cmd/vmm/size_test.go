package main

import (
	"math/big"
	"strings"
	"testing"
)

// bigFracBits is fracBits done with math/big, which vmm itself does not
// link: digits/10^len(digits) of 2^shift, rounded down.
func bigFracBits(digits string, shift int) (uint64, bool) {
	num, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return 0, false
	}
	num.Lsh(num, uint(shift))
	den := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(digits))), nil)
	q := num.Quo(num, den)
	return q.Uint64(), q.IsUint64()
}

// TestFracBits checks the fraction of a size (1.5G's .5) against
// math/big, at every unit's shift, on fractions whose bits run out early,
// never, or only past the 19 digits a uint64 holds.
func TestFracBits(t *testing.T) {
	for _, digits := range []string{
		"5", "1", "25", "125", "0001", "9", "99", "999999999999999999999999999999",
		"3333333333333333333333333333333333333333", "0000000000000000000000000000000000001",
		"1" + strings.Repeat("0", 18) + "1", "7450580596923828125", // 2^-27, exactly
		"74505805969238281249999999999999999", "74505805969238281250000000000000001",
	} {
		for _, shift := range []int{0, 1, 10, 20, 30, 40, 50, 60, 63} {
			want, ok := bigFracBits(digits, shift)
			if !ok {
				t.Fatalf("0.%s << %d does not fit 64 bits", digits, shift)
			}
			if got := fracBits(digits, shift); got != want {
				t.Errorf("fracBits(%q, %d) = %d; want %d", digits, shift, got, want)
			}
		}
	}
}

// FuzzSizeOf reads sizes as -m does, and checks a fraction's bytes
// against math/big and that the reading never panics.
func FuzzSizeOf(f *testing.F) {
	for _, s := range []string{"512", "1.5G", "0.5", "1.1G", "1.0000001K", "99999999999T", "7.9999999999999999999999E", "512B", "1.G"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, problem := sizeOf(s, 20)
		if problem != "" {
			return
		}
		unit := strings.TrimLeft(strings.TrimSpace(s), "0123456789.")
		_, frac, ok := strings.Cut(strings.TrimSpace(s)[:len(strings.TrimSpace(s))-len(unit)], ".")
		if !ok || strings.Trim(frac, "0") == "" {
			return
		}
		frac = strings.TrimRight(frac, "0")
		for _, shift := range []int{0, 20, 30, 60} {
			want, fits := bigFracBits(frac, shift)
			if got := fracBits(frac, shift); !fits || got != want {
				t.Errorf("%q: fracBits(%q, %d) = %d; math/big %d", s, frac, shift, got, want)
			}
		}
		if v == 0 || v > 1<<63 {
			t.Errorf("%q read as %d", s, v)
		}
	})
}
