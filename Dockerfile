# The worker as a container image: a static binary on an empty base, run as
# a non-root user. Build: docker build -t runpod-orchestrator-worker .
# (--build-arg VERSION=v1.2.3 stamps --version). The build command below is
# kept identical to the one cmd/worker's TestDockerfileBuildCommand runs.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/yourscope/runpod-orchestrator/internal/cmdutil.version=${VERSION}" -o /out/worker ./cmd/worker
# An unprivileged user for the runtime image, and the CA bundle that TLS to
# Runpod and to rediss:// Redis needs.
RUN echo 'worker:x:65532:65532:worker:/:/sbin/nologin' > /out/passwd

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/passwd /etc/passwd
COPY --from=build /out/worker /worker
USER 65532:65532
# /metrics, /healthz, /readyz when --http-addr (RUNPOD_HTTP_ADDR) is set, e.g. :9464
EXPOSE 9464
ENTRYPOINT ["/worker"]
