"""`ltx2 cluster-certs DIR`: the certificates of a Dask cluster whose scheduler, workers and clients prove to each
other who they are (TLS with mutual authentication, `tls://` addresses).

One private certificate authority made here signs a certificate for each role. Dask checks on every connection
that the other side's certificate chains to `ca.pem` (it does not check host names), so a process without a
certificate signed by this CA can neither reach the scheduler nor pose as a worker. The `cryptography` package
does all the cryptography: ECDSA P-256 keys, SHA-256 signatures.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass
from pathlib import Path

from flows.new_file import write_new

ROLES = ("scheduler", "worker", "client")
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest leaf lifetime browsers and most TLS stacks still accept


@dataclass(frozen=True)
class RoleFiles:
    ca: Path
    cert: Path
    key: Path


def role_files(folder: Path, role: str) -> RoleFiles:
    """Where `make_certs` put `role`'s files: the CA certificate, its certificate and its private key."""
    return RoleFiles(ca=folder / "ca.pem", cert=folder / f"{role}.pem", key=folder / f"{role}-key.pem")


class CertsExist(FileExistsError):
    pass


def make_certs(folder: Path) -> list[Path]:
    """Write ca.pem + ca-key.pem and, per role, ROLE.pem + ROLE-key.pem into `folder` (keys mode 600).

    Refuses a folder that already holds a CA: its workers and clients would stop matching."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "ca.pem").exists():
        raise CertsExist(f"{folder} already holds a cluster CA (ca.pem): use it, or remove the folder's *.pem "
                         "files to make a new one (every worker then needs the new files)")
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)  # machines whose clocks lag a little still accept them
    cluster = secrets.token_hex(4)  # tells two clusters' CAs apart in error messages

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ltx2 dask cluster"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"ltx2 dask CA {cluster}")
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(_key_usage(x509, ca=True), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    written = [write_new(folder / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644),
               _write_key(folder / "ca-key.pem", ca_key, serialization)]
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        common = f"ltx2-dask-{role}"
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(x509, ca=False), critical=True)
                # Every role both listens and connects (the scheduler dials workers, workers dial each other).
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(common)]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        files = role_files(folder, role)
        written += [write_new(files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644),
                    _write_key(files.key, key, serialization)]
    return written


def _key_usage(x509, *, ca: bool):
    return x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False)


def _write_key(path: Path, key, serialization) -> Path:
    return write_new(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
