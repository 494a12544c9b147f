"""LIBERO-Spatial: two black bowls, a plate, a ramekin, a cookie box, a wooden
cabinet with drawers and a stove; the instruction says *which* bowl goes on
the plate. Ten tasks, LIBERO's instruction strings and order; 220 steps."""
from __future__ import annotations

from envs import predicates as P
from envs.libero import objects as O
from envs.tabletop import SuiteSpec, Task

PLATE = (0.58, 0.07)
RAMEKIN = (0.42, -0.16)
COOKIE = (0.68, -0.14)
STOVE = (0.55, -0.36)
CABINET = (0.58, 0.3)
CAB_H = 0.22
TOP_DRAWER_Z = 0.12  # floor top of the top drawer (cabinet height 0.22, two drawers)

QUALIFIERS = (
    "between the plate and the ramekin", "next to the ramekin", "from table center",
    "on the cookie box", "in the top drawer of the wooden cabinet", "on the ramekin",
    "next to the cookie box", "on the stove", "next to the plate", "on the wooden cabinet",
)


def _spot(name):
  """(x, y, z) where a bowl starts for each qualifier."""
  return {
      "between the plate and the ramekin": SPOT_A,
      "next to the ramekin": SPOT_B,
      "from table center": SPOT_C,
      "on the cookie box": (COOKIE[0], COOKIE[1], 0.06),
      "in the top drawer of the wooden cabinet": (CABINET[0] - 0.14, CABINET[1], TOP_DRAWER_Z),
      "on the ramekin": (RAMEKIN[0], RAMEKIN[1], 0.035),
      "next to the cookie box": SPOT_D,
      "on the stove": (STOVE[0], STOVE[1], 0.03),
      "next to the plate": SPOT_E,
      "on the wooden cabinet": (CABINET[0] + 0.02, CABINET[1], CAB_H),
  }[name]


# table spots, clear of the fixtures and of each other by >= 2 cm after noise
SPOT_A = (0.49, -0.06, 0.0)  # between the plate and the ramekin
SPOT_B = (0.36, -0.26, 0.0)  # next to the ramekin
SPOT_C = (0.41, 0.14, 0.0)  # table centre (bowl clear of the cabinet top board when lifted straight up)
SPOT_D = (0.72, 0.0, 0.0)  # next to the cookie box
SPOT_E = (0.45, 0.04, 0.0)  # next to the plate
# where the other bowl waits in each task (clear of the target's spot)
OTHER = (SPOT_C, SPOT_D, SPOT_A, SPOT_B, SPOT_A, SPOT_D, SPOT_C, SPOT_C, SPOT_B, SPOT_A)


def spec() -> SuiteSpec:
  table, table_e = O.table()
  bowl1, bowl1_e = O.bowl("akita_black_bowl_1")
  bowl2, bowl2_e = O.bowl("akita_black_bowl_2")
  plate, plate_e = O.plate("plate", pos=(*PLATE, 0.0), half=0.06)
  ram, ram_e = O.ramekin("ramekin", pos=(*RAMEKIN, 0.0))
  cookie, cookie_e = O.block("cookie_box", (0.045, 0.06, 0.03), (0.85, 0.35, 0.15, 1),
                             pos=(*COOKIE, 0.0))
  stove, stove_e, _, _ = O.stove("stove", pos=(*STOVE, 0.0))
  cab, cab_e, drawer_es, arts = O.cabinet("wooden_cabinet", pos=(*CABINET, 0.0), height=CAB_H)
  tasks = []
  for t, q in enumerate(QUALIFIERS):
    x, y, z = _spot(q)
    small = (0.01, 0.01, 0.3) if z > 0 else (0.02, 0.02, 0.3)
    tasks.append(Task(
        instruction=f"pick up the black bowl {q} and place it on the plate",
        layout={"akita_black_bowl_1": (x, y, z, 0.0), "akita_black_bowl_2": (*OTHER[t], 0.0)},
        noise={"akita_black_bowl_1": small},
        joints={"wooden_cabinet_top_drawer": 0.14 if "drawer" in q else 0.0},
        goals=((P.ON, "akita_black_bowl_1", "plate"),)))
  return SuiteSpec(
      name="libero_spatial",
      bodies=(table, bowl1, bowl2, plate, ram, cookie, stove, cab),
      rules=(("pad", "grip"), ("pad", "handle"), ("pad", "table"), ("base", "table"),
             ("base", "support")),
      objects=(bowl1_e, bowl2_e),
      fixtures=(plate_e, ram_e, cookie_e, stove_e, cab_e, *drawer_es),
      articulations=tuple(arts),
      tasks=tuple(tasks),
      max_episode_steps=220)
