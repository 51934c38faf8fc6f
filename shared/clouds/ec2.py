"""EC2 through libcloud, including EC2-compatible endpoints that are not AWS (account
``config.endpoint``), such as a local moto server in the tests.

The stock driver works against AWS. Against moto (and some other EC2 look-alikes) five things
differ, and this small subclass handles them without changing behaviour against AWS:
1. moto routes requests by the SigV4 credential scope: always sign with version 4.
2. moto's XML namespace lacks libcloud's trailing slash: both spellings are accepted.
3. moto's error ``<Response>`` has a namespace (and a ``<Type>``): errors are read by tag name,
   so the real code and message come through (``InvalidInstanceID.NotFound``, ``AuthFailure``).
4. moto omits ``<return>true</return>``: an HTTP success counts as success for reboot.
5. libcloud numbers ``ResourceId.N`` from 0 in CreateTags; AWS and moto count from 1.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node
from libcloud.compute.drivers.ec2 import NAMESPACE, EC2Connection, EC2NodeDriver, EC2Response

_NAMESPACE_WITHOUT_SLASH = NAMESPACE.rstrip("/")
_AUTH_CODES = {"AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "OptInRequired"}


class CompatibleEC2Response(EC2Response):
    def parse_body(self) -> Any:
        if isinstance(self.body, str) and f'"{_NAMESPACE_WITHOUT_SLASH}"' in self.body:
            self.body = self.body.replace(f'"{_NAMESPACE_WITHOUT_SLASH}"', f'"{NAMESPACE}"')
        return super().parse_body()

    def parse_error(self) -> str:
        text = re.sub(r'\sxmlns="[^"]*"', "", self.body or "", count=1)
        try:
            root = ElementTree.fromstring(text)
        except ElementTree.ParseError:
            return super().parse_error()
        messages = []
        for error in root.iter("Error"):
            code, message = error.findtext("Code") or "", error.findtext("Message") or ""
            if code in _AUTH_CODES:
                raise InvalidCredsError(f"{code}: {message}")
            messages.append(f"{code}: {message}")
        return "\n".join(messages) or super().parse_error()


class CompatibleEC2Connection(EC2Connection):
    responseCls = CompatibleEC2Response


class CompatibleEC2NodeDriver(EC2NodeDriver):
    """``EC2NodeDriver`` that also talks to EC2-compatible endpoints (``endpoint=`` URL)."""

    connectionCls = CompatibleEC2Connection

    def __init__(
        self,
        key: str,
        secret: str,
        *,
        region: str = "us-east-1",
        endpoint: str | None = None,
        **kwargs: Any,
    ) -> None:
        if endpoint:
            url = urlsplit(endpoint)
            kwargs.update(
                secure=url.scheme == "https",
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 80),
            )
        super().__init__(key, secret, region=region, signature_version="4", **kwargs)

    def reboot_node(self, node: Node) -> bool:
        params = {"Action": "RebootInstances", "InstanceId.1": node.id}
        response = self.connection.request(self.path, params=params)
        return response.status == 200

    def ex_create_tags(self, resource: Any, tags: dict[str, str], dry_run: bool = False) -> bool:
        params = {"Action": "CreateTags", "ResourceId.1": resource.id}
        for i, (key, value) in enumerate(tags.items(), start=1):
            params[f"Tag.{i}.Key"] = key
            params[f"Tag.{i}.Value"] = value
        if dry_run:
            params["DryRun"] = "true"
        return self.connection.request(self.path, params=params, method="POST").status == 200
