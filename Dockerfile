# bankd, built from source in a Go builder stage and shipped as a static
# binary in an empty image. For hosts with no container registry, see
# Dockerfile.offline (the same runtime stage around a binary built on the host).
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/bankd ./cmd/bankd

FROM scratch
COPY --from=build /out/bankd /bankd
# No root: any unprivileged uid will do, and scratch has no passwd file.
USER 65532:65532
ENV BANKD_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=4s --start-period=20s --retries=3 CMD ["/bankd", "healthcheck"]
ENTRYPOINT ["/bankd"]
