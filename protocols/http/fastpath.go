package http

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
)

// The engine's fast path for the common answer: HTTP/1.1, a final status
// other than 204/304/421, a Content-Length, no hop-by-hop field, and a
// head that arrived whole in the connection's buffer. Such a head is
// checked byte by byte and, when the client's writer is the connection
// loop's (rawHeadWriter) with nothing set yet, copied to the client as the
// backend wrote it: no http.Response, no header map, no strings. Anything
// else (chunked, Connection fields, interim answers, upgrades, a head split
// across reads, a byte net/http would have to interpret leniently) goes
// through http.ReadResponse as before; the fast path then has consumed
// nothing. The profile of `hcbench http` put http.ReadResponse's parsing
// and the header map copies at about a tenth of the front's CPU.

// rawHeadWriter is a ResponseWriter that takes an answer's header lines
// as bytes (the connection loop's respWriter, and wrappers that pass it
// on).
type rawHeadWriter interface {
	// startRawHead begins an answer with code and a body of exactly
	// contentLength bytes, writing the status line; the caller writes
	// complete header lines into the returned writer and then calls
	// endRawHead. ok is false (nothing written) when the answer has begun
	// or header fields were set through Header().
	startRawHead(code int, contentLength int64) (bw *bufio.Writer, ok bool)
	// endRawHead ends the head (adding Date when the backend sent none,
	// and the connection's own fields).
	endRawHead(hasDate bool)
}

func rawHeadWriterOf(w http.ResponseWriter) (rawHeadWriter, bool) {
	rw, ok := w.(rawHeadWriter)
	return rw, ok
}

// fastHead is a parsed head that qualifies for the fast path.
type fastHead struct {
	code          int
	contentLength int64
	hasDate       bool
	// lines are the header lines, each with its CRLF, as the backend sent
	// them; headLen is the length of the whole head (to discard).
	lines   []byte
	headLen int
}

// parseFastHead looks at what is buffered in br (without consuming it)
// and reports whether it begins with a head the fast path takes.
func parseFastHead(br *bufio.Reader, refuses bool) (fastHead, bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return fastHead{}, false
	}
	head := buf[:end+2] // status line and header lines, each with its CRLF
	var fh fastHead
	fh.headLen = end + 4
	fh.contentLength = -1
	// "HTTP/1.1 NNN reason\r\n"
	const prefix = "HTTP/1.1 "
	if len(head) < len(prefix)+5 || string(head[:len(prefix)]) != prefix {
		return fastHead{}, false
	}
	c0, c1, c2 := head[9], head[10], head[11]
	if c0 < '2' || c0 > '5' || c1 < '0' || c1 > '9' || c2 < '0' || c2 > '9' || (head[12] != ' ' && head[12] != '\r') {
		return fastHead{}, false
	}
	fh.code = int(c0-'0')*100 + int(c1-'0')*10 + int(c2-'0')
	if fh.code == http.StatusNoContent || fh.code == http.StatusNotModified || (refuses && fh.code == http.StatusMisdirectedRequest) {
		return fastHead{}, false
	}
	eol := bytes.IndexByte(head, '\n')
	if eol < 1 || head[eol-1] != '\r' || !visible(head[13:eol-1]) {
		return fastHead{}, false
	}
	fh.lines = head[eol+1:]
	for rest := fh.lines; len(rest) > 0; {
		eol := bytes.IndexByte(rest, '\n')
		if eol < 1 || rest[eol-1] != '\r' {
			return fastHead{}, false // a bare LF: net/http decides
		}
		line := rest[:eol-1]
		rest = rest[eol+1:]
		colon := bytes.IndexByte(line, ':')
		if colon < 1 {
			return fastHead{}, false // also obs-fold (a line starting with space)
		}
		name, value := line[:colon], bytes.TrimLeft(line[colon+1:], " \t")
		for _, b := range name {
			if !tokenByte(b) {
				return fastHead{}, false
			}
		}
		if !visible(value) {
			return fastHead{}, false
		}
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, err := strconv.ParseInt(string(bytes.TrimRight(value, " \t")), 10, 64)
			if err != nil || n < 0 || (fh.contentLength >= 0 && fh.contentLength != n) {
				return fastHead{}, false
			}
			fh.contentLength = n
		case asciiEqualFold(name, "Date"):
			fh.hasDate = true
		case hopHeaderBytes(name):
			return fastHead{}, false
		}
	}
	if fh.contentLength < 0 {
		return fastHead{}, false
	}
	return fh, true
}

// visible reports whether b holds only visible characters, spaces and
// tabs (no CR, LF or other control bytes; obs-text is let through, as
// net/http does).
func visible(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// tokenByte: a character of a field name (RFC 9110 token).
func tokenByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func asciiEqualFold[T string | []byte](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if d >= 'A' && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// hopHeaderBytes is hopHeader for a field name as sent (any case).
func hopHeaderBytes(name []byte) bool {
	for _, h := range hopHeaders {
		if asciiEqualFold(name, h) {
			return true
		}
	}
	return false
}

// writeFast answers the client from a fast head at the front of bc's
// buffer: the head, then exactly contentLength bytes of body. responded
// reports whether anything reached w.
func writeFast(w http.ResponseWriter, bc *backendConn, fh fastHead) (responded bool, err error) {
	if rw, ok := rawHeadWriterOf(w); ok {
		if bw, ok := rw.startRawHead(fh.code, fh.contentLength); ok {
			bw.Write(fh.lines)
			rw.endRawHead(fh.hasDate)
			responded = true
		}
	}
	if !responded {
		h := w.Header()
		for rest := fh.lines; len(rest) > 0; {
			eol := bytes.IndexByte(rest, '\n')
			line := rest[:eol-1]
			rest = rest[eol+1:]
			colon := bytes.IndexByte(line, ':')
			name := textproto.CanonicalMIMEHeaderKey(string(line[:colon]))
			h[name] = append(h[name], string(bytes.TrimRight(bytes.TrimLeft(line[colon+1:], " \t"), " \t")))
		}
		w.WriteHeader(fh.code)
		responded = true
	}
	br := bc.br
	if _, err := br.Discard(fh.headLen); err != nil {
		return true, err
	}
	remaining := fh.contentLength
	if n := int64(br.Buffered()); n > 0 && remaining > 0 {
		n = min(n, remaining)
		p, _ := br.Peek(int(n))
		if _, err := w.Write(p); err != nil {
			return true, err
		}
		br.Discard(int(n))
		remaining -= n
	}
	if remaining == 0 {
		return true, nil
	}
	// The rest streams, flushed whenever the backend pauses.
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	flusher, _ := w.(http.Flusher)
	for remaining > 0 {
		p := buf[:min(int64(len(buf)), remaining)]
		n, err := br.Read(p)
		if n > 0 {
			remaining -= int64(n)
			if _, werr := w.Write(p[:n]); werr != nil {
				return true, werr
			}
			if remaining > 0 && n < len(p) && flusher != nil {
				flusher.Flush()
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if remaining > 0 {
				return true, err
			}
		}
	}
	return true, nil
}
