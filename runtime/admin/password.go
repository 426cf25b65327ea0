package admin

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Passwords given on create never reach an actor: the SiteSpec (replicated
// to every copy and kept in each node's catalog) holds only hashes.
//
//   - FTP: "$pbkdf2-sha256$i=<iterations>$<salt>$<key>" (PHC string format,
//     unpadded standard base64), checked by VerifyFTPPassword.
//   - MySQL: mysql_native_password's "*" + upper-case hex of
//     SHA1(SHA1(password)), what MariaDB takes in
//     CREATE USER .. IDENTIFIED BY PASSWORD '<hash>' and what its
//     challenge-response needs; no stronger form lets the server check it.

// FTPHashIterations is the PBKDF2 work factor of new FTP password hashes.
const FTPHashIterations = 100_000

const ftpHashPrefix = "$pbkdf2-sha256$"

var b64 = base64.RawStdEncoding

// HashFTPPassword hashes an FTP password with a fresh random salt.
func HashFTPPassword(password string) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, FTPHashIterations, 32)
	if err != nil {
		return "", err
	}
	return ftpHashPrefix + "i=" + strconv.Itoa(FTPHashIterations) + "$" + b64.EncodeToString(salt) + "$" + b64.EncodeToString(key), nil
}

// VerifyFTPPassword reports whether password matches a HashFTPPassword hash.
func VerifyFTPPassword(hash, password string) bool {
	rest, ok := strings.CutPrefix(hash, ftpHashPrefix)
	if !ok {
		return false
	}
	parts := strings.Split(rest, "$")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "i=") {
		return false
	}
	iter, err := strconv.Atoi(parts[0][2:])
	if err != nil || iter < 1 || iter > 10_000_000 {
		return false
	}
	salt, err1 := b64.DecodeString(parts[1])
	want, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, password, salt, iter, len(want))
	return err == nil && subtle.ConstantTimeCompare(got, want) == 1
}

// HashMySQLPassword is the mysql_native_password hash of password.
func HashMySQLPassword(password string) string {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}
