import time
from datetime import datetime, UTC
from pathlib import Path
import sqlalchemy as sa
from db.importer import import_inventory
P = Path(__file__).resolve().parents[2] / ".." / "shared/realdata/icimod_glacial_lakes_2015/GL_3basins_2015.geojson"
def test_x(engine):
    t = time.time()
    r = import_inventory(engine, P, aoi_name="icimod", when=datetime(2015, 10, 1, tzinfo=UTC))
    print(time.time() - t, r)
    t = time.time()
    r = import_inventory(engine, P, aoi_name="icimod", when=datetime(2015, 10, 1, tzinfo=UTC))
    print(time.time() - t, r)
    with engine.connect() as c:
        print(c.execute(sa.text("select attributes from inventory.lake_observation limit 2")).all())
