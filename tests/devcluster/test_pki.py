"""Certificates chain to the CA, carry the right names and usages; keys are 0600."""

import ipaddress
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubenpu.devcluster import pki


@pytest.fixture(scope="module")
def ca() -> pki.CertificateAuthority:
    return pki.CertificateAuthority()


def _load(pair: pki.KeyPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert_pem)


def test_client_certificate_maps_to_user_and_groups(ca: pki.CertificateAuthority) -> None:
    cert = _load(ca.issue("system:node:n1", organizations=("system:nodes",), client=True))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:nodes"
    )
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_server_certificate_is_signed_by_the_ca_for_loopback(
    ca: pki.CertificateAuthority,
) -> None:
    pair = ca.issue(
        "kube-apiserver", server=True, dns_names=("localhost",), ip_addresses=("127.0.0.1",)
    )
    cert = _load(pair)
    authority = x509.load_pem_x509_certificate(ca.cert_pem)
    cert.verify_directly_issued_by(authority)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_certificate_needs_a_use(ca: pki.CertificateAuthority) -> None:
    with pytest.raises(ValueError):
        ca.issue("nobody")


def test_service_account_keys_are_a_pair() -> None:
    from cryptography.hazmat.primitives import serialization

    private_pem, public_pem = pki.service_account_keys()
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]


def test_secrets_are_written_owner_only(tmp_path, ca: pki.CertificateAuthority) -> None:
    key = tmp_path / "pki" / "admin.key"
    pki.write_secret(key, ca.issue("admin", client=True).key_pem)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    pki.write_secret(key, b"again")  # replacing keeps the mode
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes() == b"again"
