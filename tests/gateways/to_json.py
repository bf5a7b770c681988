"""Read one YAML document on stdin and print it as JSON (for tests/tests/gateway_configs.rs).

With --envoy, first check it against Envoy's API (a bootstrap: `static_resources` and the rest):
every field, enum value and `typed_config` must be one Envoy's protos define (envoy-data-plane's
classes, generated from them). Envoy's own validation rules beyond the schema (required fields,
ranges) are not checked. A document that fails prints the reason on stderr and exits 1.
"""

import json
import sys

import yaml


def check_envoy(document: dict) -> None:
    # Importing a module registers its messages for `typed_config` (`@type`) lookups.
    import envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.filters.http.router.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3  # noqa: F401
    import envoy_data_plane.envoy.extensions.transport_sockets.tls.v3  # noqa: F401
    from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

    Bootstrap.from_dict(document)


def main() -> int:
    document = yaml.safe_load(sys.stdin)
    if "--envoy" in sys.argv[1:]:
        try:
            check_envoy(document)
        except (KeyError, ValueError, TypeError) as error:
            print(f"not a valid Envoy bootstrap: {error}", file=sys.stderr)
            return 1
    json.dump(document, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
