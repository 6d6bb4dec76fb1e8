"""The Temporal connection is read as the Temporal SDKs and CLI read it (temporalio.envconfig):
the standard TEMPORAL_* variables and profiles of a TOML file, with an API key or mTLS, and the
settings of before (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, ...) meaning what they meant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.service import TLSConfig

from contracts.temporal import connect_config
from settings import Settings

CERT = b"-----BEGIN CERTIFICATE-----\nclient\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nkey\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n"


def plain_settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    paths = {"cert": tmp_path / "client.pem", "key": tmp_path / "client.key", "ca": tmp_path / "ca.pem"}
    paths["cert"].write_bytes(CERT)
    paths["key"].write_bytes(KEY)
    paths["ca"].write_bytes(CA)
    return paths


def test_defaults_connect_to_the_dev_server_without_tls(tmp_path: Path) -> None:
    config = connect_config(plain_settings(), environ={"HOME": str(tmp_path)})
    assert config["target_host"] == "127.0.0.1:7233"
    assert config["namespace"] == "default"
    assert not config.get("tls") and "api_key" not in config


def test_settings_of_before_still_apply(tmp_path: Path) -> None:
    settings = plain_settings(temporal_address="temporal.internal:7233", temporal_namespace="prod")
    config = connect_config(settings, environ={"HOME": str(tmp_path)})
    assert (config["target_host"], config["namespace"]) == ("temporal.internal:7233", "prod")


def test_standard_variables_with_client_certificates_give_mtls(pems: dict[str, Path], tmp_path: Path) -> None:
    environ = {
        "HOME": str(tmp_path),
        "TEMPORAL_ADDRESS": "temporal.example.internal:7233",
        "TEMPORAL_NAMESPACE": "ocpplab",
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pems["cert"]),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pems["key"]),
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pems["ca"]),
        "TEMPORAL_TLS_SERVER_NAME": "temporal.example.internal",
    }
    config = connect_config(plain_settings(), environ=environ)
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (CERT, KEY, CA)
    assert tls.domain == "temporal.example.internal"
    assert (config["target_host"], config["namespace"]) == ("temporal.example.internal:7233", "ocpplab")


def test_settings_with_client_certificates_give_mtls(pems: dict[str, Path], tmp_path: Path) -> None:
    settings = plain_settings(
        temporal_address="temporal.example.internal:7233",
        temporal_tls_client_cert_path=str(pems["cert"]),
        temporal_tls_client_key_path=str(pems["key"]),
    )
    config = connect_config(settings, environ={"HOME": str(tmp_path)})
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key) == (CERT, KEY)


def test_a_profile_of_the_configuration_file(pems: dict[str, Path], tmp_path: Path) -> None:
    toml = tmp_path / "temporal.toml"
    toml.write_text(f"""
[profile.default]
address = "127.0.0.1:7233"

[profile.prod]
address = "temporal.example.internal:7233"
namespace = "ocpplab"

[profile.prod.tls]
client_cert_path = "{pems["cert"]}"
client_key_path = "{pems["key"]}"
""")
    environ = {"HOME": str(tmp_path), "TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod"}
    config = connect_config(plain_settings(), environ=environ)
    assert (config["target_host"], config["namespace"]) == ("temporal.example.internal:7233", "ocpplab")
    tls = config["tls"]
    assert isinstance(tls, TLSConfig) and tls.client_cert == CERT and tls.client_private_key == KEY

    # a setting given explicitly wins over the file (the dev stack's stack.env, a test's settings)
    override = plain_settings(temporal_address="127.0.0.1:17233")
    assert connect_config(override, environ=environ)["target_host"] == "127.0.0.1:17233"
    # the profile can also be chosen by the settings
    chosen = plain_settings(temporal_profile="prod", temporal_config_file=str(toml))
    assert connect_config(chosen, environ={"HOME": str(tmp_path)})["namespace"] == "ocpplab"


def test_an_api_key_turns_tls_on_unless_told_otherwise(tmp_path: Path) -> None:
    cloud = plain_settings(
        temporal_address="eu-west-1.aws.api.temporal.io:7233",
        temporal_namespace="ocpplab.a1b2c",
        temporal_api_key="secret-key",
    )
    config = connect_config(cloud, environ={"HOME": str(tmp_path)})
    assert config["api_key"] == "secret-key" and config["tls"] is True
    no_tls = plain_settings(temporal_api_key="secret-key", temporal_tls=False)
    assert connect_config(no_tls, environ={"HOME": str(tmp_path)})["tls"] is False
