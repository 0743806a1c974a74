.PHONY: test bench dev lint

# The README's test command: installs redis-server if missing, gofmt, vet, go test -race.
test:
	./scripts/test.sh

bench:
	go test -run '^$$' -bench . -benchmem ./...

dev:
	go run ./cmd/worker --dev
