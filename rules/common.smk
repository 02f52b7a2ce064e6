# Configuration validation, tile list and wildcard constraints shared by every rule.
from snakemake.utils import validate

from tilecat.tiles import TILE_ID_RE, read_manifest
from tilecat.survey import band_files


validate(config, schema="../workflow/schemas/config.schema.yaml")

CONFIGFILE = workflow.configfiles[-1]
RESULTS = config["results"]
TILES = read_manifest(config["tiles"])
TILE_IDS = [t.id for t in TILES]
TILE_INDEX = {t.id: t.index for t in TILES}


wildcard_constraints:
    tile=TILE_ID_RE.pattern.strip("^$"),


def tile_input_files(wildcards):
    """The tile's FITS files (image, weight, dq) for every band, deduplicated."""
    paths = []
    for bf in band_files(config, wildcards.tile):
        for ref in (bf.image, bf.weight, bf.dq):
            if ref is not None and str(ref.path) not in paths:
                paths.append(str(ref.path))
    return paths


def tile_index(wildcards):
    """Stable integer of the tile, used in object ids."""
    return TILE_INDEX[wildcards.tile]


# --- batched mode and releases (workflow.mode, release.*) ---------------------------
from tilecat.batch import BATCH_RE, batch_ids, batch_members
from tilecat.release.selection import exclusions, included_tiles


WORKFLOW_MODE = config.get("workflow", {}).get("mode", "per_tile")
BATCH_SIZE = int(config.get("workflow", {}).get("batch_size", 100))
BATCHES = batch_ids(len(TILES), BATCH_SIZE) if WORKFLOW_MODE == "batched" else []
EXCLUDED = exclusions(config)
INCLUDED_IDS = [t.id for t in included_tiles(config, TILES)]
RELEASES = config.get("release", {}).get("dir") or f"{RESULTS}/release"


wildcard_constraints:
    batch=BATCH_RE.pattern.strip("^$"),
    version=TILE_ID_RE.pattern.strip("^$"),


def all_tile_catalogs(wildcards):
    """What the aggregate reads: every included tile's catalog, in manifest order
    (per_tile mode), or every batch's marker (batched mode: the batch job writes its
    tiles' catalogs, which Snakemake then does not stat one by one)."""
    if WORKFLOW_MODE == "batched":
        return [f"{RESULTS}/batches/{b}.json" for b in BATCHES]
    return [f"{RESULTS}/tiles/{t}/catalog.parquet" for t in INCLUDED_IDS]


def manifest_file(wildcards):
    """The tile manifest when it is one file (not a glob), as an `ancient` input:
    batches rerun when their membership changes (params), not on every edit."""
    spec = str(config["tiles"])
    return [ancient(spec)] if "{tile}" not in spec else []


def batch_tile_ids(wildcards):
    """The batch's included tiles, comma-separated (a params rerun trigger)."""
    members = batch_members(TILES, wildcards.batch, BATCH_SIZE)
    return ",".join(t.id for t in members if t.id not in EXCLUDED)


def release_report(wildcards):
    """The QA report (rule qa_report, rules/report.smk), which the release includes."""
    return list(workflow.get_rule("qa_report").output) if workflow.is_rule("qa_report") else []


def release_target(wildcards):
    """The release directory named by `release.version`."""
    version = config.get("release", {}).get("version")
    if not version:
        raise ValueError(
            "target 'release' needs release.version: set it in the config or run "
            "`snakemake <release dir>/<version>` (e.g. results/<survey>/release/v1)"
        )
    return f"{RELEASES}/{version}"
