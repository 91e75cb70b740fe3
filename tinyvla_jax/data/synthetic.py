"""A procedural two-target reaching task, for tests and for trying the pipeline without a simulator.

Not a robot benchmark: it exists so the training loop, the loader and the tests have data whose
actions depend on the images *and* on the instruction (which of two colored targets to reach), with
no MuJoCo needed. Scene: a unit square seen from above; a red and a green target; the hand (blue).
The scripted expert moves at up to 0.1 per step toward the named target and closes the gripper when
it arrives. State = (x, y, z=0, gripper) like MetaWorld's obs[:4]; action = (dx, dy, dz, grip) in
[-1, 1].
"""

from __future__ import annotations

import numpy as np

from tinyvla_jax.data.episodes import Episode

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60)}
HAND_COLOR = (40, 60, 230)
PHRASES = ("reach the {} target", "move the gripper to the {} target", "go to the {} one")
STEP_SIZE = 0.1


def _render(hand, targets, *, size: int, camera: int) -> np.ndarray:
  img = np.full((size, size, 3), 128, np.uint8)
  yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
  if camera % 2 == 1:  # a second viewpoint: the scene mirrored, as seen from the other side
    xx = -xx
  radius = 0.12
  for name, pos in targets.items():
    img[(xx - pos[0]) ** 2 + (yy - pos[1]) ** 2 < radius**2] = COLORS[name]
  img[(xx - hand[0]) ** 2 + (yy - hand[1]) ** 2 < (radius * 0.8) ** 2] = HAND_COLOR
  return img


def make_episode(rng: np.random.Generator, *, image_size: int = 32, num_cameras: int = 1,
                 max_steps: int = 40) -> Episode:
  targets = {name: rng.uniform(-0.8, 0.8, 2) for name in COLORS}
  goal_name = str(rng.choice(list(COLORS)))
  goal = targets[goal_name]
  hand = rng.uniform(-0.8, 0.8, 2)
  gripper = -1.0
  images, states, actions = [], [], []
  hold = 0
  for _ in range(max_steps):
    delta = np.clip((goal - hand) / STEP_SIZE, -1, 1)
    arrived = np.linalg.norm(goal - hand) < 0.02
    move = np.zeros(2) if arrived else delta
    action = np.array([move[0], move[1], 0.0, 1.0 if arrived else -1.0], np.float32)
    images.append([_render(hand, targets, size=image_size, camera=v) for v in range(num_cameras)])
    states.append(np.array([hand[0], hand[1], 0.0, gripper], np.float32))
    actions.append(action)
    hand = hand + action[:2] * STEP_SIZE
    gripper = float(action[3])
    hold += arrived
    if hold >= 3:
      break
  instruction = PHRASES[int(rng.integers(len(PHRASES)))].format(goal_name)
  return Episode(images=np.asarray(images, np.uint8), states=np.stack(states), actions=np.stack(actions),
                 instruction=instruction, task=f"reach-{goal_name}")


def make_episodes(num_episodes: int, *, seed: int, image_size: int = 32, num_cameras: int = 1) -> list[Episode]:
  rng = np.random.default_rng(seed)
  return [make_episode(rng, image_size=image_size, num_cameras=num_cameras) for _ in range(num_episodes)]
