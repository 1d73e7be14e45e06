# A wharf replica: one static binary FROM scratch (no base image exists on our
# machines, and none is needed). Build with scripts/build-image.sh, which compiles
# the static binary and assembles the build context this file expects:
#   wharf                   the static binary
#   rootfs/                 copied over the image's root: the CA bundle (for S3 and
#                           PostgreSQL over TLS) at etc/ssl/certs/ca-certificates.crt;
#                           for a dynamically linked binary (scripts/build-image.sh
#                           --binary PATH, test images) also its shared libraries and
#                           loader, each at its absolute path. Never empty: an empty
#                           layer on scratch fails ("layer does not exist") with some
#                           storage drivers (fuse-overlayfs)
#   data/                   an empty directory, the default data directory
FROM scratch
COPY wharf /wharf
COPY rootfs/ /
COPY --chown=65532:65532 data /var/lib/wharf
ENV WHARF_DATA_DIR=/var/lib/wharf \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 5000
ENTRYPOINT ["/wharf"]
CMD ["serve"]
