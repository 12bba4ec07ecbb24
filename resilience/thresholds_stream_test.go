package resilience_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/resilience"
)

// fakeStream ends as its fields say.
type fakeStream struct {
	grpc.ClientStream
	recvErr, sendErr, headerErr error
}

func (s *fakeStream) RecvMsg(any) error            { return s.recvErr }
func (s *fakeStream) SendMsg(any) error            { return s.sendErr }
func (s *fakeStream) Header() (metadata.MD, error) { return nil, s.headerErr }

// A stream holds its max_requests slot until it ends, in each of the ways
// grpc-go documents for a stream to end, and no longer; a stream over the
// limit fails with UNAVAILABLE wrapping ErrOverflow.
func TestThresholdsStreamClientInterceptor(t *testing.T) {
	for _, tt := range []struct {
		name     string
		stream   fakeStream
		end      func(ctx context.CancelFunc, s grpc.ClientStream)
		released bool
	}{
		{"RecvMsg reaches io.EOF", fakeStream{recvErr: io.EOF}, func(_ context.CancelFunc, s grpc.ClientStream) { s.RecvMsg(nil) }, true},
		{"RecvMsg fails", fakeStream{recvErr: status.Error(codes.Internal, "x")}, func(_ context.CancelFunc, s grpc.ClientStream) { s.RecvMsg(nil) }, true},
		{"Header fails", fakeStream{headerErr: errors.New("x")}, func(_ context.CancelFunc, s grpc.ClientStream) { s.Header() }, true},
		{"SendMsg fails", fakeStream{sendErr: errors.New("x")}, func(_ context.CancelFunc, s grpc.ClientStream) { s.SendMsg(nil) }, true},
		{"SendMsg's io.EOF leaves the status to RecvMsg", fakeStream{sendErr: io.EOF}, func(_ context.CancelFunc, s grpc.ClientStream) { s.SendMsg(nil) }, false},
		{"the context ends", fakeStream{}, func(cancel context.CancelFunc, _ grpc.ClientStream) { cancel() }, true},
		{"a message received", fakeStream{}, func(_ context.CancelFunc, s grpc.ClientStream) { s.RecvMsg(nil) }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			th := resilience.NewThresholds(resilience.Limits{MaxRequests: 1})
			ic := resilience.ThresholdsStreamClientInterceptor(th)
			streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
				fs := tt.stream
				return &fs, nil
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := ic(ctx, &grpc.StreamDesc{}, nil, "/m", streamer)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ic(context.Background(), &grpc.StreamDesc{}, nil, "/m", streamer); status.Code(err) != codes.Unavailable || !errors.Is(err, resilience.ErrOverflow) {
				t.Fatalf("a second stream: %v; want UNAVAILABLE wrapping ErrOverflow", err)
			}
			tt.end(cancel, s)
			tt.end(cancel, s) // ending twice releases once
			want := int64(1)
			if tt.released {
				want = 0
			}
			deadline := time.Now().Add(5 * time.Second) // context.AfterFunc runs on its own goroutine
			for th.Requests() != want && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := th.Requests(); got != want {
				t.Errorf("requests in flight = %d; want %d", got, want)
			}
		})
	}
}
