package main

import (
	"math/big"
	"regexp"
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

// sizeSyntax is what sizeOf accepts, before its range checks: digits, a
// fraction, a unit (B alone is bytes; a unit letter may be followed by
// i, B or iB), any case.
var sizeSyntax = regexp.MustCompile(`^[0-9]+(\.[0-9]*)?([bB]|[kKmMgGtTpPeE][iI]?[bB]?)?$`)

// bigSize is the number of bytes s stands for, rounded down, with math/big
// (no unit: 1<<shift bytes); ok is false where s is not sizeSyntax.
func bigSize(s string, shift int) (n *big.Int, ok bool) {
	t := strings.TrimSpace(s)
	if !sizeSyntax.MatchString(t) {
		return nil, false
	}
	unit := strings.TrimLeft(t, "0123456789.")
	if u := strings.ToUpper(unit); u == "B" {
		shift = 0
	} else if u != "" {
		shift = 10 * (strings.Index("KMGTPE", u[:1]) + 1)
	}
	r, ok := new(big.Rat).SetString(t[:len(t)-len(unit)])
	if !ok {
		return nil, false
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), uint(shift))))
	return new(big.Int).Quo(r.Num(), r.Denom()), true
}

// FuzzSizeOf reads sizes as -m does and checks them against math/big:
// what sizeOf accepts is the exact number of bytes, rounded down, and it
// accepts every well-formed size from one byte to 2^63; it never panics.
func FuzzSizeOf(f *testing.F) {
	for _, s := range []string{"512", "1.5G", "0.5", "1.1G", "1.0000001K", "99999999999T", "7.9999999999999999999999E", "8.0000000000000000001E", "512B", "1.G", "2gib", "0.0G", "1.5 ", "0.1B"} {
		f.Add(s)
	}
	limit := new(big.Int).Lsh(big.NewInt(1), 63)
	f.Fuzz(func(t *testing.T, s string) {
		v, problem := sizeOf(s, 20)
		want, ok := bigSize(s, 20)
		inRange := ok && want.Sign() > 0 && want.Cmp(limit) <= 0
		switch {
		case problem == "" && !inRange:
			t.Errorf("%q read as %d bytes; math/big: %v (well-formed %v)", s, v, want, ok)
		case problem == "" && want.Uint64() != v:
			t.Errorf("%q read as %d bytes; math/big: %v", s, v, want)
		case problem != "" && inRange:
			t.Errorf("%q refused (%s); math/big: %v bytes", s, problem, want)
		}
	})
}
