module github.com/hybridcluster/hybridcluster

go 1.26.8

require (
	github.com/cockroachdb/datadriven v1.0.2
	github.com/mistifyio/go-zfs/v3 v3.0.1
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/google/uuid v1.2.0 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
)

tool google.golang.org/protobuf/cmd/protoc-gen-go
