// A spdystream peer for bulkhead-spdy's interop test (tests/go_interop.rs).
//
//	interop client ADDR   dial ADDR, exercise a session as kubectl would
//	interop server        listen on 127.0.0.1:0, print the address, serve one session
//
// Built in GOPATH mode against github.com/moby/spdystream (Debian's
// golang-github-docker-spdystream-dev, v0.2.0). Exits non-zero on failure.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "interop: "+format+"\n", args...)
	os.Exit(1)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// echoOnce opens a stream, sends payload, half-closes and expects it back.
func echoOnce(conn *spdystream.Connection, headers http.Header, payload []byte) {
	s, err := conn.CreateStream(headers, nil, false)
	if err != nil {
		fail("CreateStream: %v", err)
	}
	if err := s.WaitTimeout(10 * time.Second); err != nil {
		fail("waiting for SYN_REPLY: %v", err)
	}
	done := make(chan []byte)
	go func() {
		got, err := io.ReadAll(s)
		if err != nil {
			fail("read echo: %v", err)
		}
		done <- got
	}()
	// Write in 32 KiB pieces, as io.Copy would.
	for off := 0; off < len(payload); off += 32 * 1024 {
		end := off + 32*1024
		if end > len(payload) {
			end = len(payload)
		}
		if _, err := s.Write(payload[off:end]); err != nil {
			fail("write: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		fail("close: %v", err)
	}
	select {
	case got := <-done:
		if !bytes.Equal(got, payload) {
			fail("echo mismatch on stream %d: got %d bytes, want %d", s.Identifier(), len(got), len(payload))
		}
	case <-time.After(60 * time.Second):
		fail("echo timed out on stream %d", s.Identifier())
	}
}

func client(addr string) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		fail("dial: %v", err)
	}
	conn, err := spdystream.NewConnection(nc, false)
	if err != nil {
		fail("NewConnection: %v", err)
	}
	go conn.Serve(spdystream.NoOpStreamHandler)

	h := http.Header{}
	h.Set("streamType", "error")
	h.Set("port", "8080")
	echoOnce(conn, h, []byte("hello from go"))

	if _, err := conn.Ping(); err != nil {
		fail("ping: %v", err)
	}

	// Port-forward style: many streams at once.
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := http.Header{}
			h.Set("streamType", "data")
			h.Set("requestID", fmt.Sprint(i))
			echoOnce(conn, h, pattern(256*1024+i, byte(i)))
		}(i)
	}
	wg.Wait()

	// One large transfer, both directions at once.
	echoOnce(conn, http.Header{"Streamtype": {"big"}}, pattern(64<<20, 99))

	// A stream our peer resets: reads end.
	s, err := conn.CreateStream(http.Header{"Streamtype": {"reset-me"}}, nil, false)
	if err != nil {
		fail("CreateStream: %v", err)
	}
	if err := s.WaitTimeout(10 * time.Second); err != nil {
		fail("waiting for SYN_REPLY: %v", err)
	}
	if _, err := io.ReadAll(s); err != nil {
		fail("read of a reset stream: %v", err)
	}

	if err := conn.Close(); err != nil {
		fail("close: %v", err)
	}
	if err := conn.Wait(20 * time.Second); err != nil {
		fail("wait: %v", err)
	}
	fmt.Println("client ok")
}

func server() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Println(ln.Addr().String())
	nc, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	conn, err := spdystream.NewConnection(nc, true)
	if err != nil {
		fail("NewConnection: %v", err)
	}
	var wg sync.WaitGroup
	conn.Serve(func(s *spdystream.Stream) {
		// As k8s.io/apimachinery's spdy connection does: reply with no headers.
		if err := s.SendReply(http.Header{}, false); err != nil {
			fail("SendReply: %v", err)
		}
		switch s.Headers().Get("streamType") {
		case "reverse":
			// Open a stream to the client and send on it.
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := conn.CreateStream(http.Header{"From": {"go"}}, nil, false)
				if err != nil {
					fail("reverse CreateStream: %v", err)
				}
				if err := r.WaitTimeout(10 * time.Second); err != nil {
					fail("reverse SYN_REPLY: %v", err)
				}
				if _, err := r.Write([]byte("from the go server")); err != nil {
					fail("reverse write: %v", err)
				}
				r.Close()
				got, err := io.ReadAll(r)
				if err != nil || string(got) != "thanks" {
					fail("reverse read: %q %v", got, err)
				}
				s.Close()
			}()
		case "ping":
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := conn.Ping(); err != nil {
					fail("server ping: %v", err)
				}
				s.Write([]byte("pong"))
				s.Close()
			}()
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := io.Copy(s, s); err != nil {
					fail("echo: %v", err)
				}
				s.Close()
			}()
		}
	})
	// Serve returns when the client's GOAWAY arrives or the connection ends.
	wg.Wait()
	fmt.Println("server ok")
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: interop client ADDR | interop server")
	}
	switch os.Args[1] {
	case "client":
		client(os.Args[2])
	case "server":
		server()
	default:
		fail("unknown mode %q", os.Args[1])
	}
}
