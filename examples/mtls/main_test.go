package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"GET /orders/42   -> 200 hello spiffe://shop.example/ns/shop/sa/frontend",
		"/ns/shop/sa/frontend GET /admin       -> 403",
		"/ns/shop/sa/reports GET /orders/42   -> 403",
		"plaintext  GET /orders/42   -> 400",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
