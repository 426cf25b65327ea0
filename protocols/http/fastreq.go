package http

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// The connection loop's fast path for the common request head: HTTP/1.1,
// an origin-form target, one Host, no Transfer-Encoding or Trailer, a
// Connection field of at most keep-alive or close, every byte strict (no
// bare LF, no control character, no obs-fold), and the whole head in the
// connection's buffer. It builds the http.Request with one allocation for
// the request and its URL, one string holding every name and value, and a
// header map kept per connection. Every other head is read by
// http.ReadRequest as before (the fast path then consumed nothing), so
// odd or hostile input meets net/http's checks. The profile of `hcbench
// http` put http.ReadRequest at about a tenth of the front's CPU.

// fastRequest is a request with its URL, allocated together.
type fastRequest struct {
	req http.Request
	url url.URL
}

// readFastRequest returns the request at the front of br, or ok false
// (nothing consumed) when it is not one the fast path takes. header is
// cleared and filled (the connection's map, reused request after request:
// a handler must not keep it past its answer, which holds for the front).
func readFastRequest(br *bufio.Reader, header http.Header) (*http.Request, bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, false
	}
	headLen := end + 4
	// One string for the whole head: names and values are slices of it.
	// (Checked on the bytes first, so a refused head costs no copy.)
	head := buf[:end+2]
	eol := bytes.IndexByte(head, '\n')
	if eol < 1 || head[eol-1] != '\r' {
		return nil, false
	}
	line := head[:eol-1]
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 < 1 {
		return nil, false
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 < 1 || string(rest[sp2+1:]) != "HTTP/1.1" || rest[0] != '/' {
		return nil, false
	}
	for _, c := range line[:sp1] {
		if !tokenByte(c) {
			return nil, false
		}
	}
	for _, c := range rest[:sp2] {
		// A plain target: visible ASCII without '%' or '#' (anything else
		// is url.ParseRequestURI's to judge).
		if c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return nil, false
		}
	}
	// The fields: checked, counted.
	fields, hosts := 0, 0
	var contentLength int64 = -1
	closeConn := false
	for rest := head[eol+1:]; len(rest) > 0; {
		eol := bytes.IndexByte(rest, '\n')
		if eol < 1 || rest[eol-1] != '\r' {
			return nil, false
		}
		line := rest[:eol-1]
		rest = rest[eol+1:]
		colon := bytes.IndexByte(line, ':')
		if colon < 1 {
			return nil, false
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !tokenByte(c) {
				return nil, false
			}
		}
		if !visible(value) {
			return nil, false
		}
		switch {
		case asciiEqualFold(name, "Host"):
			hosts++
			if hosts > 1 || len(value) == 0 {
				return nil, false
			}
			continue
		case asciiEqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (contentLength >= 0 && n != contentLength) {
				return nil, false
			}
			contentLength = n
		case asciiEqualFold(name, "Connection"):
			switch {
			case asciiEqualFold(value, "close"):
				closeConn = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return nil, false
			}
		case asciiEqualFold(name, "Transfer-Encoding"), asciiEqualFold(name, "Trailer"):
			return nil, false
		}
		fields++
	}
	if hosts != 1 {
		return nil, false
	}
	// Accepted: build the request.
	s := string(head)
	fr := &fastRequest{}
	r := &fr.req
	r.Method = s[:sp1]
	target := s[sp1+1 : sp1+1+sp2]
	r.RequestURI = target
	path, query, hasQuery := cutByte(target, '?')
	fr.url.Path, fr.url.RawQuery, fr.url.ForceQuery = path, query, hasQuery && query == ""
	r.URL = &fr.url
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.1", 1, 1
	r.Close = closeConn
	clear(header)
	r.Header = header
	values := make([]string, fields)
	i := 0
	pos := eol + 1
	for pos < len(s) {
		e := pos + bytes.IndexByte(head[pos:], '\n')
		line := s[pos : e-1]
		pos = e + 1
		colon := indexByteString(line, ':')
		name, value := line[:colon], trimOWSString(line[colon+1:])
		if asciiEqualFold(name, "Host") {
			r.Host = value
			continue
		}
		key := canonicalName(name)
		values[i] = value
		if prior, ok := header[key]; ok {
			header[key] = append(prior, value)
		} else {
			header[key] = values[i : i+1 : i+1]
		}
		i++
	}
	if contentLength > 0 {
		r.ContentLength = contentLength
		r.Body = &fixedBody{r: br, remaining: contentLength}
	} else {
		r.Body = http.NoBody
	}
	_, _ = br.Discard(headLen)
	return r, true
}

func cutByte(s string, c byte) (before, after string, found bool) {
	if i := indexByteString(s, c); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func trimOWSString(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// canonicalName is textproto.CanonicalMIMEHeaderKey that allocates nothing
// when the name is canonical already (as clients send the usual ones).
func canonicalName(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && c >= 'a' && c <= 'z' || !upper && c >= 'A' && c <= 'Z' {
			return http.CanonicalHeaderKey(name)
		}
		upper = c == '-'
	}
	return name
}

// fixedBody is a request body of a known length read from the
// connection; a connection that ends early is an error, not a short body.
type fixedBody struct {
	r         io.Reader
	remaining int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.r.Read(p)
	b.remaining -= int64(n)
	if err == io.EOF && b.remaining > 0 {
		err = io.ErrUnexpectedEOF
	} else if err == nil && b.remaining == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }
