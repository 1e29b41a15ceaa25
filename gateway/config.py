"""The gateway's home directory and its settings file, gateway.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from common.files import ConfigError, check_name, read_json, settings_from, write_json


@dataclass
class GatewayConfig:
    gateway_id: str = "gw1"  # names this gateway in its records and to the MDMS
    bind: str = "127.0.0.1"
    port: int = 5683
    interval_s: int = 900  # reading interval the meters use
    grace_s: int = 900  # wait this long after an interval ends before sealing it
    bill_grace_s: int = 3600  # and this long after a day ends before signing its bills
    clock: str = "wall"  # "wall", or "data" for replays of recorded data
    seal_every_s: float = 10.0
    mdms_url: str = ""  # the MDMS intake API, e.g. https://mdms.example:8443
    mdms_ca: str = ""  # file the MDMS's TLS certificate must chain to (CA or pinned cert)
    push_every_s: float = 5.0
    push_batch: int = 200  # items per request to the MDMS
    # The fleet's health (every meter's last reading, backlog, telemetry)
    # goes with a push at most this often: a meter reports once an
    # interval, and a thousand meters' health is about 300 KB of JSON.
    health_every_s: float = 60.0
    # Datagrams per second (and burst) one source address and port may send
    # before the rest are dropped unread; a meter sends a few per interval.
    source_rate: float = 50.0
    source_burst: float = 200.0
    # Paillier randomness h_s^x with x of this many bits (gateway/fastenc.py;
    # docs/privacy.md): 448 for a 2048-bit key; |n|/2 (1024) is DJN's own.
    encryption_exponent_bits: int = 448
    # Processes that make randomness ahead while the gateway idles; -1: one
    # fewer than the machine's cores (at least one), 0: none.
    encryption_workers: int = -1
    # Room for a fleet's burst of datagrams (the kernel's default, ~208 KiB,
    # overflowed at about a thousand meters reconnecting at once).
    receive_buffer_bytes: int = 4 << 20
    # How long a response may take and still ride in the ACK (piggybacked)
    # before aiocoap sends an empty ACK and the response separately. Each
    # separate response is one more exchange and three more datagrams, and
    # aiocoap looks up its exchanges per remote in linear time, so under
    # load this is worth 20-30 % of the gateway's throughput at one reading
    # per request (docs/benchmarks.md). Keep it below the meters'
    # ack_timeout_ms (2 s by default) or they retransmit first.
    empty_ack_delay_s: float = 1.0
    # Key generations a meter's Request #1 may be ahead of this gateway's
    # copy (gateway/keystore.py). A meter steps only after an agreement
    # under its current secret, so 1 suffices; each further one costs a key
    # derivation for every unverifiable Request #1 (a flood of forged ones).
    # After a restore the gateway follows further for a while on its own
    # (gateway/backup.py).
    key_ratchet_window: int = 1
    # GET /metrics (Prometheus) and /healthz over HTTP, on this address and
    # port (0: off). Local by default: scrape it through the host's own
    # exporter set-up or open it to the monitoring network only.
    metrics_bind: str = "127.0.0.1"
    metrics_port: int = 9683

    def validate(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            want = (int, float) if isinstance(f.default, float) else type(f.default)
            if isinstance(v, bool) or not isinstance(v, want):
                raise ConfigError(f"{f.name} must be a {type(f.default).__name__}, not {v!r}")
        if self.clock not in ("wall", "data"):
            raise ConfigError("clock must be 'wall' or 'data'")
        if self.interval_s <= 0 or 86400 % self.interval_s:
            raise ConfigError("interval_s must divide a day (e.g. 60, 300, 900, 3600)")
        if not 0 < self.port < 65536:
            raise ConfigError("port must be 1..65535")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError("metrics_port must be 0 (off) or 1..65535")
        if self.grace_s < 0 or self.bill_grace_s < 0 or self.seal_every_s <= 0 \
                or self.push_every_s <= 0 or self.health_every_s <= 0:
            raise ConfigError("grace periods must be >= 0, seal_every_s, push_every_s and"
                              " health_every_s > 0")
        check_name(self.gateway_id, "gateway_id")
        if self.encryption_exponent_bits < 448 or self.encryption_workers < -1:
            raise ConfigError("encryption_exponent_bits must be >= 448 and encryption_workers"
                              " >= -1")
        if not 0 < self.empty_ack_delay_s < 2:
            raise ConfigError("empty_ack_delay_s must be above 0 and below 2 (the meters'"
                              " ACK timeout)")
        if not 65536 <= self.receive_buffer_bytes <= 1 << 30:
            raise ConfigError("receive_buffer_bytes must be 64 KiB .. 1 GiB")
        if self.source_rate <= 0 or self.source_burst < 1:
            raise ConfigError("source_rate must be > 0 and source_burst >= 1")
        if not 1 <= self.key_ratchet_window <= 1000:
            raise ConfigError("key_ratchet_window must be 1..1000")
        if not 1 <= self.push_batch <= 5000:
            raise ConfigError("push_batch must be 1..5000")
        if self.mdms_url and not self.mdms_url.startswith(("http://", "https://")):
            raise ConfigError("mdms_url must be an http:// or https:// URL")


class GatewayHome:
    """Files of one gateway, all in one directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config_file = self.path / "gateway.json"
        self.db = self.path / "gateway.db"
        self.keystore = self.path / "keystore.json"
        self.signing_key = self.path / "signing.key"
        self.signing_pub = self.path / "signing.pub"
        self.log = self.path / "gateway.log"
        self.guardian_pub = self.path / "guardian.pub"  # signs the key epochs we accept
        self.firmware = self.path / "firmware"  # images staged for meters (updates.py)

    def load_config(self) -> GatewayConfig:
        return settings_from(GatewayConfig, read_json(self.config_file, "gateway settings"),
                             str(self.config_file))

    def save_config(self, cfg: GatewayConfig) -> None:
        cfg.validate()
        write_json(self.config_file, asdict(cfg))
