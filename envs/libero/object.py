"""LIBERO-Object: a basket and six of the ten groceries on the table; pick the
named one and place it in the basket. Ten tasks, LIBERO's instruction strings
and order; 280 steps. Each task's scene holds the target and five
distractors (the next five groceries in LIBERO's order); the other four wait
parked off the table."""
from __future__ import annotations

from envs import predicates as P
from envs.libero import objects as O
from envs.tabletop import SuiteSpec, Task

ITEMS = ("alphabet_soup", "cream_cheese", "salad_dressing", "bbq_sauce", "ketchup",
         "tomato_sauce", "butter", "milk", "chocolate_pudding", "orange_juice")
NAMES = ("alphabet soup", "cream cheese", "salad dressing", "bbq sauce", "ketchup",
         "tomato sauce", "butter", "milk", "chocolate pudding", "orange juice")
BASKET = (0.62, 0.19)
# six table spots, >= 12 cm apart (pads open 8 cm wide) and clear of the basket
SPOTS = ((0.42, -0.26), (0.42, -0.1), (0.42, 0.06), (0.56, -0.26), (0.56, -0.1), (0.70, -0.18))


def spec() -> SuiteSpec:
  table, _ = O.table()
  basket, basket_e = O.basket("basket", pos=(*BASKET, 0.0))
  items = [O.grocery(n) for n in ITEMS]
  tasks = []
  for t, name in enumerate(NAMES):
    layout = {}
    for k in range(6):  # the target, then its five distractors
      spot = SPOTS[(t + k) % len(SPOTS)]
      layout[ITEMS[(t + k) % len(ITEMS)]] = (*spot, 0.0, 0.0)
    tasks.append(Task(instruction=f"pick up the {name} and place it in the basket",
                      layout=layout, goals=((P.IN, ITEMS[t], "basket"),)))
  return SuiteSpec(
      name="libero_object",
      bodies=(table, basket, *(b for b, _ in items)),
      rules=(("pad", "grip"), ("pad", "table"), ("base", "table"), ("base", "support")),
      objects=tuple(e for _, e in items),
      fixtures=(basket_e,),
      articulations=(),
      tasks=tuple(tasks),
      max_episode_steps=280)
