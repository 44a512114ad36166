// An HTTPS client on Go's standard library for the https tests: one keep-alive connection
// (HTTP/2, or HTTP/1.1 with -http1). Usage: client [-http1] PORT METHOD:PATH...; says "ready",
// then on each line from stdin makes the requests in order and prints their statuses
// ("GET 200 GET 404 ...") and the protocol of the last.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

func main() {
	args := os.Args[1:]
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
	}
	if args[0] == "-http1" {
		transport.ForceAttemptHTTP2 = false
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		args = args[1:]
	}
	client := &http.Client{Transport: transport}
	base := "https://127.0.0.1:" + args[0]
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var seen []string
		proto := ""
		for _, ask := range args[1:] {
			method, path, _ := strings.Cut(ask, ":")
			req, err := http.NewRequest(method, base+path, nil)
			if err != nil {
				panic(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				panic(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			seen = append(seen, fmt.Sprintf("%s %d", method, resp.StatusCode))
			proto = resp.Proto
		}
		fmt.Println(strings.Join(seen, " ") + " " + proto)
	}
}
