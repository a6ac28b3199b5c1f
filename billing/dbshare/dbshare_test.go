package dbshare

import (
	"errors"
	"testing"
)

type handle struct{ closed int }

func TestAcquireShares(t *testing.T) {
	opened := 0
	r := New(func(string) (*handle, error) { opened++; return &handle{}, nil },
		func(h *handle) error { h.closed++; return nil })
	a, releaseA, err := r.Acquire("x.db")
	if err != nil {
		t.Fatal(err)
	}
	b, releaseB, err := r.Acquire("./x.db")
	if err != nil {
		t.Fatal(err)
	}
	if a != b || opened != 1 {
		t.Fatalf("two acquires of one path opened %d handles", opened)
	}
	_ = releaseA()
	_ = releaseA() // a double release must not close it under b's user
	if a.closed != 0 {
		t.Fatal("closed while another user holds it")
	}
	_ = releaseB()
	if a.closed != 1 {
		t.Fatalf("closed %d times after the last release, want 1", a.closed)
	}
	c, releaseC, _ := r.Acquire("x.db")
	if c == a || opened != 2 {
		t.Fatal("a released path was not opened anew")
	}
	_ = releaseC()
}

func TestAcquireOpenError(t *testing.T) {
	boom := errors.New("boom")
	r := New(func(string) (*handle, error) { return nil, boom }, func(*handle) error { return nil })
	if _, _, err := r.Acquire("x.db"); !errors.Is(err, boom) {
		t.Fatalf("err %v, want %v", err, boom)
	}
}
