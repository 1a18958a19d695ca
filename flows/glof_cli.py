"""``glacial-lakes glof``: the GLOF screening rules and the lakes they flag (screening, not a hazard assessment).

* ``glof rules [RULE] [--enable | --disable] [--max-glacier-distance-m M] [--min-area-m2 A]
  [--min-observations N] [--min-growth-pct-per-year P] [--min-surrounding-slope-deg S]``: show
  the rules (table ``inventory.glof_rule``), or change RULE's thresholds (:func:`db.glof.set_rule`).
  The flags follow at once: the views compute them when read.
* ``glof flagged``: one line per flagged lake (view ``inventory.glof_flagged_lakes``).

Exit status: 0 success, 2 bad input (one line naming the rule and the threshold), 1 anything else.
"""

from __future__ import annotations

import click

from flows.cli_support import guarded
from flows.settings import load_settings

__all__ = ["glof_command"]


@click.group("glof")
def glof_command() -> None:
    """GLOF screening: configurable rules and the lakes they flag (screening, not a hazard assessment)."""


@glof_command.command("rules")
@click.argument("rule", required=False)
@click.option("--enable/--disable", "enabled", default=None, help="switch RULE on or off")
@click.option("--max-glacier-distance-m", type=float, default=None, help="geodesic distance to a glacier, m")
@click.option("--min-area-m2", type=float, default=None, help="smallest current lake area, m²")
@click.option("--min-observations", type=float, default=None, help="contact_growth: fewest present observations")
@click.option("--min-growth-pct-per-year", type=float, default=None, help="contact_growth: % of the area per year")
@click.option("--min-surrounding-slope-deg", type=float, default=None, help="steep_surroundings: ring slope, °")
@guarded
def rules_command(rule: str | None, enabled: bool | None, **thresholds: float | None) -> None:
    """Show the rules, or change RULE's thresholds (units as the option names)."""
    from db.glof import GlofRuleError, read_rules, set_rule
    from flows.database import ready_engine

    engine = ready_engine(load_settings())
    changes = {k: v for k, v in thresholds.items() if v is not None}
    if rule is None and (changes or enabled is not None):
        raise GlofRuleError("glof rules: name the rule to change (contact_growth or steep_surroundings)")
    if rule is not None and (changes or enabled is not None):
        set_rule(engine, rule, enabled=enabled, **changes)
    for stored in read_rules(engine).values():
        if rule is not None and stored.rule != rule:
            continue
        used = {
            k: v for k, v in stored.__dict__.items() if k not in ("rule", "enabled", "description") and v is not None
        }
        state = "on" if stored.enabled else "off"
        click.echo(f"{stored.rule} ({state}): " + ", ".join(f"{k} = {v:g}" for k, v in used.items()))


@glof_command.command("flagged")
@guarded
def flagged_command() -> None:
    """List the flagged lakes: id, rules, area (m²), AOIs."""
    from db.glof import flagged_lakes
    from flows.database import ready_engine

    lakes = flagged_lakes(ready_engine(load_settings()))
    for row in lakes.itertuples(index=False):
        click.echo(f"lake {row.lake_id}: {row.rules}, {row.area_m2:.0f} m², AOI {row.aoi_names}")
    click.echo(f"{len(lakes)} lakes flagged (screening, not a hazard assessment)")
