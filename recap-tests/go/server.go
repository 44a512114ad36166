// An HTTPS server on Go's standard library (crypto/tls, HTTP/2 by ALPN) for the https tests:
// /ok 200, /fail 503, anything else 404. Usage: server PORT CERT KEY; prints "ready".
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			fmt.Fprintln(w, "ok")
		case "/fail":
			w.WriteHeader(503)
		default:
			w.WriteHeader(404)
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Println("ready")
	panic(http.ServeTLS(ln, mux, os.Args[2], os.Args[3]))
}
