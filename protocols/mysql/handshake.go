package mysql

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"

	gm "github.com/go-mysql-org/go-mysql/mysql"
)

// Why this package does its own connection phase rather than go-mysql's
// server.Conn: a site's spec holds only mysql_native_password hashes
// (SHA1(SHA1(password))), while go-mysql's server checks answers against
// plain passwords and keeps the salt to itself; and the capabilities it
// advertises are fixed (no CLIENT_MULTI_STATEMENTS). Here the proxy picks
// the salt, checks the answer against the hash (on the site's master,
// which holds the spec) and recovers SHA1(password), with which it logs in
// to the site's mariadbd as the same user, after the client's
// capabilities. go-mysql provides the constants, errors and hex helpers.

// serverVersion is what clients see: MariaDB's "5.5.5-" prefix tells them
// the server is MariaDB (what runs behind the proxy).
const serverVersion = "5.5.5-10.11.0-MariaDB-hybridcluster"

// collationUTF8MB4 is utf8mb4_general_ci, the handshake's default.
const collationUTF8MB4 = 45

// serverCaps are the capabilities the proxy offers. Every one of them is
// passed on to the site's server as the client chose it, so the packets
// can be relayed unchanged. Not offered: compression, the EOF-less result
// sets (CLIENT_DEPRECATE_EOF) and connection attributes.
const serverCaps = gm.CLIENT_LONG_PASSWORD | gm.CLIENT_FOUND_ROWS | gm.CLIENT_LONG_FLAG | gm.CLIENT_CONNECT_WITH_DB |
	gm.CLIENT_NO_SCHEMA | gm.CLIENT_ODBC | gm.CLIENT_LOCAL_FILES | gm.CLIENT_IGNORE_SPACE | gm.CLIENT_PROTOCOL_41 |
	gm.CLIENT_INTERACTIVE | gm.CLIENT_TRANSACTIONS | gm.CLIENT_SECURE_CONNECTION | gm.CLIENT_MULTI_STATEMENTS |
	gm.CLIENT_MULTI_RESULTS | gm.CLIENT_PS_MULTI_RESULTS | gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA |
	gm.CLIENT_SESSION_TRACK

// relayedCaps are the client capabilities that shape the relayed packets
// (or the server's behaviour) and so go to the site's server unchanged.
const relayedCaps = gm.CLIENT_FOUND_ROWS | gm.CLIENT_LONG_FLAG | gm.CLIENT_NO_SCHEMA | gm.CLIENT_ODBC |
	gm.CLIENT_LOCAL_FILES | gm.CLIENT_IGNORE_SPACE | gm.CLIENT_INTERACTIVE | gm.CLIENT_TRANSACTIONS |
	gm.CLIENT_MULTI_STATEMENTS | gm.CLIENT_MULTI_RESULTS | gm.CLIENT_PS_MULTI_RESULTS | gm.CLIENT_SESSION_TRACK

// login is what the proxy learnt from a client's connection phase: enough
// to log in to the site's server, now and again after a move.
type login struct {
	User    string
	Salt    []byte // the proxy's salt
	Answer  []byte // the client's mysql_native_password answer to Salt
	DB      string
	Caps    uint32 // the client's capabilities, as offered
	Charset byte
}

// accepted is a client connection after its connection phase.
type accepted struct {
	conn net.Conn // TLS when the client asked for it
	r    *bufio.Reader
	w    *bufio.Writer
	l    login
	seq  byte // the sequence number of the client's last packet
}

var errHandshake = gm.NewDefaultError(gm.ER_HANDSHAKE_ERROR)

// serverHandshake runs the connection phase up to the point where the
// answer must be checked: greeting, optional TLS, the client's response,
// and a switch to mysql_native_password if the client used another method.
func serverHandshake(conn net.Conn, tlsConf *tls.Config, connID uint32) (*accepted, error) {
	salt := gm.RandomBuf(20)
	for i, c := range salt { // NUL ends the salt in the greeting
		if c == 0 {
			salt[i] = 'x'
		}
	}
	caps := uint32(serverCaps)
	if tlsConf != nil {
		caps |= gm.CLIENT_SSL
	}
	a := &accepted{conn: conn, r: bufio.NewReaderSize(conn, 16<<10), w: bufio.NewWriterSize(conn, 16<<10)}
	g := []byte{10}
	g = append(g, serverVersion...)
	g = append(g, 0)
	g = binary.LittleEndian.AppendUint32(g, connID)
	g = append(g, salt[:8]...)
	g = append(g, 0)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps))
	g = append(g, collationUTF8MB4)
	g = binary.LittleEndian.AppendUint16(g, gm.SERVER_STATUS_AUTOCOMMIT)
	g = binary.LittleEndian.AppendUint16(g, uint16(caps>>16))
	g = append(g, 21)
	g = append(g, make([]byte, 10)...)
	g = append(g, salt[8:]...)
	g = append(g, 0)
	g = append(g, gm.AUTH_NATIVE_PASSWORD...)
	g = append(g, 0)
	if err := writePacket(a.w, 0, g); err != nil {
		return nil, err
	}
	if err := a.w.Flush(); err != nil {
		return nil, err
	}
	p, _, err := readPacket(a.r, nil)
	if err != nil {
		return nil, err
	}
	if len(p.payload) < 32 {
		return nil, errHandshake
	}
	clientCaps := binary.LittleEndian.Uint32(p.payload)
	if clientCaps&gm.CLIENT_PROTOCOL_41 == 0 {
		return nil, gm.NewError(gm.ER_NOT_SUPPORTED_AUTH_MODE, "client does not support the 4.1 protocol")
	}
	if len(p.payload) == 32 && clientCaps&gm.CLIENT_SSL != 0 {
		if tlsConf == nil {
			return nil, errHandshake
		}
		tc := tls.Server(conn, tlsConf)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		a.conn, a.r, a.w = tc, bufio.NewReaderSize(tc, 16<<10), bufio.NewWriterSize(tc, 16<<10)
		if p, _, err = readPacket(a.r, nil); err != nil {
			return nil, err
		}
		if len(p.payload) < 32 {
			return nil, errHandshake
		}
		clientCaps = binary.LittleEndian.Uint32(p.payload)
	}
	a.seq = p.seq
	b := p.payload
	l := login{Caps: clientCaps & caps, Charset: b[8], Salt: salt}
	pos := 32
	end := bytes.IndexByte(b[pos:], 0)
	if end < 0 {
		return nil, errHandshake
	}
	l.User = string(b[pos : pos+end])
	pos += end + 1
	var answer []byte
	switch {
	case clientCaps&gm.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0:
		n, next, ok := lenenc(b, pos)
		if !ok || next+int(n) > len(b) {
			return nil, errHandshake
		}
		answer, pos = b[next:next+int(n)], next+int(n)
	case clientCaps&gm.CLIENT_SECURE_CONNECTION != 0:
		if pos >= len(b) || pos+1+int(b[pos]) > len(b) {
			return nil, errHandshake
		}
		answer, pos = b[pos+1:pos+1+int(b[pos])], pos+1+int(b[pos])
	default:
		return nil, gm.NewError(gm.ER_NOT_SUPPORTED_AUTH_MODE, "client does not support secure authentication")
	}
	if clientCaps&gm.CLIENT_CONNECT_WITH_DB != 0 && pos < len(b) {
		end := bytes.IndexByte(b[pos:], 0)
		if end < 0 {
			end = len(b) - pos
		}
		l.DB = string(b[pos : pos+end])
		pos += end + 1
	}
	plugin := gm.AUTH_NATIVE_PASSWORD
	if clientCaps&gm.CLIENT_PLUGIN_AUTH != 0 && pos < len(b) {
		end := bytes.IndexByte(b[pos:], 0)
		if end < 0 {
			end = len(b) - pos
		}
		plugin = string(b[pos : pos+end])
	}
	if plugin != gm.AUTH_NATIVE_PASSWORD {
		// Ask for mysql_native_password: the only method the stored hash
		// can check (and the one the site's server is given).
		sw := append([]byte{0xfe}, gm.AUTH_NATIVE_PASSWORD...)
		sw = append(sw, 0)
		sw = append(sw, salt...)
		sw = append(sw, 0)
		a.seq++
		if err := writePacket(a.w, a.seq, sw); err != nil {
			return nil, err
		}
		if err := a.w.Flush(); err != nil {
			return nil, err
		}
		p, _, err := readPacket(a.r, nil)
		if err != nil {
			return nil, err
		}
		a.seq = p.seq
		answer = p.payload
	}
	l.Answer = append([]byte(nil), answer...)
	a.l = l
	return a, nil
}

// reply sends the packet that ends the client's connection phase (the
// server's OK, or an error).
func (a *accepted) reply(payload []byte) error {
	a.seq++
	if err := writePacket(a.w, a.seq, payload); err != nil {
		return err
	}
	return a.w.Flush()
}

// backend is a logged-in connection to a site's server.
type backend struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// errBackendProtocol: the site's server answered something this proxy does
// not understand during its connection phase.
var errBackendProtocol = errors.New("mysql: unexpected packet from the site's server during login")

// backendLogin logs in to a site's server over conn as l.User, with
// SHA1(password), the client's capabilities and character set. It
// returns the server's OK payload, or the server's refusal as *gm.MyError.
func backendLogin(conn net.Conn, l login, stage1 []byte) (*backend, []byte, error) {
	be := &backend{conn: conn, r: bufio.NewReaderSize(conn, 16<<10), w: bufio.NewWriterSize(conn, 16<<10)}
	p, _, err := readPacket(be.r, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("mysql: greeting of the site's server: %w", err)
	}
	g := p.payload
	if len(g) > 0 && g[0] == 0xff {
		return nil, nil, parseErr(g)
	}
	if len(g) < 1 || g[0] != 10 {
		return nil, nil, errBackendProtocol
	}
	pos := bytes.IndexByte(g[1:], 0)
	if pos < 0 {
		return nil, nil, errBackendProtocol
	}
	pos += 2 + 4 // version NUL, connection id
	if pos+8+1+2+1+2+2+1+10+12 > len(g) {
		return nil, nil, errBackendProtocol
	}
	salt := append([]byte(nil), g[pos:pos+8]...)
	pos += 8 + 1
	serverCaps := uint32(binary.LittleEndian.Uint16(g[pos:]))
	pos += 2 + 1 + 2
	serverCaps |= uint32(binary.LittleEndian.Uint16(g[pos:])) << 16
	pos += 2 + 1 + 10
	salt = append(salt, g[pos:pos+12]...)

	caps := l.Caps&relayedCaps | gm.CLIENT_LONG_PASSWORD | gm.CLIENT_PROTOCOL_41 | gm.CLIENT_SECURE_CONNECTION |
		gm.CLIENT_PLUGIN_AUTH | gm.CLIENT_CONNECT_WITH_DB
	if caps&^serverCaps&^gm.CLIENT_LONG_PASSWORD != 0 {
		return nil, nil, fmt.Errorf("mysql: the site's server lacks capabilities %#x", caps&^serverCaps)
	}
	r := binary.LittleEndian.AppendUint32(nil, caps)
	r = binary.LittleEndian.AppendUint32(r, segmentMax)
	r = append(r, l.Charset)
	r = append(r, make([]byte, 23)...)
	r = append(r, l.User...)
	r = append(r, 0)
	answer := nativeAnswer(stage1, salt)
	r = append(r, byte(len(answer)))
	r = append(r, answer...)
	r = append(r, l.DB...)
	r = append(r, 0)
	r = append(r, gm.AUTH_NATIVE_PASSWORD...)
	r = append(r, 0)
	seq := p.seq + 1
	for range 3 { // greeting answer, at most one method switch
		if err := writePacket(be.w, seq, r); err != nil {
			return nil, nil, err
		}
		if err := be.w.Flush(); err != nil {
			return nil, nil, err
		}
		p, _, err = readPacket(be.r, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("mysql: login to the site's server: %w", err)
		}
		switch {
		case len(p.payload) > 0 && p.payload[0] == 0x00:
			return be, append([]byte(nil), p.payload...), nil
		case len(p.payload) > 0 && p.payload[0] == 0xff:
			return nil, nil, parseErr(p.payload)
		case len(p.payload) > 0 && p.payload[0] == 0xfe:
			rest := p.payload[1:]
			end := bytes.IndexByte(rest, 0)
			if end < 0 || string(rest[:end]) != gm.AUTH_NATIVE_PASSWORD {
				return nil, nil, errBackendProtocol
			}
			newSalt := bytes.TrimRight(rest[end+1:], "\x00")
			r = nativeAnswer(stage1, newSalt)
			seq = p.seq + 1
		default:
			return nil, nil, errBackendProtocol
		}
	}
	return nil, nil, errBackendProtocol
}
