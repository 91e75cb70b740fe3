"""MetaWorld tasks as our robot sees them: camera images, the hand's state, 4-D actions, instructions.

One `MetaWorldTask` wraps one MetaWorld v3 environment. A *setup* (object and goal placement) is a
function of an integer seed alone, so collection and evaluation can name disjoint sets of setups:

    task = MetaWorldTask("drawer-open-v3", cameras=("corner2",), image_size=72)
    obs = task.reset(setup_seed=7)            # obs.images uint8 [V, H, W, 3], obs.state float32 [4]
    obs, success = task.step(task.expert_action())

Facts this file relies on (measured with metaworld 3.1.1 / mujoco 3.3.0; tests/sim pins them):
- The robot state is `obs[:4]` (hand xyz + gripper). The rest of the 39-D observation is privileged
  (object and goal poses); only the scripted expert reads it.
- MetaWorld's cameras render upside down: every frame is flipped with `[::-1]`.
- Rendering with anti-aliasing, shadows and reflections runs at ~6 fps at 96 px on this CPU; with them
  off (`_fast_rendering`) ~60 fps. Images are for a policy, not for a paper figure.
- Stepping past 500 steps raises, so episodes are capped at `MAX_EPISODE_STEPS`.
- reset() leaves the goal site and some bodies at the previous episode's world poses until the next
  kinematics pass (see reset).
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from tinyvla_jax.errors import UserError, MissingExtraError

MAX_EPISODE_STEPS = 500  # MetaWorld's own limit (stepping beyond it raises)
# Moved cameras: a MetaWorld camera rendered from another position (same orientation and field of view).
# corner2_near is corner2 where 3D Diffusion Policy's MetaWorld wrapper puts it (0.6, 0.295, 0.8), the
# camera of the paper's image baselines. At MetaWorld's own corner2 (1.3, -0.2, 1.1) the table fills a
# third of the frame, and reach's goal or push's puck is 1-3 px at 72 px; from here everything is ~2.5x
# larger. The cost: objects near the far left of some setups are closer to the frame's edge.
MOVED_CAMERAS: dict[str, tuple[str, tuple[float, float, float]]] = {
    "corner2_near": ("corner2", (0.6, 0.295, 0.8)),
}
CAMERAS = ("corner", "corner2", "corner3", "corner4", "topview", "behindGripper", "gripperPOV", *MOVED_CAMERAS)
STATE_DIM = 4  # hand xyz + gripper opening
# MetaWorld v3's 39-D observation (privileged beyond STATE_DIM): hand xyz, the first object's position, the goal.
RAW_HAND, RAW_OBJECT, RAW_GOAL = slice(0, 3), slice(4, 7), slice(36, 39)
ACTION_DIM = 4  # hand xyz delta + gripper effort, each in [-1, 1]

# Several paraphrases per task: collection draws one per episode, so the policy has to read the words,
# not memorize one string. Tasks without an entry get paraphrases made from their name.
INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "reach-v3": ("reach the red goal", "move the gripper to the target", "reach toward the goal position"),
    "push-v3": ("push the puck to the goal", "slide the puck to the target", "push the block to the goal"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "grasp the puck and put it on the target",
                      "move the puck to the goal through the air"),
    "door-open-v3": ("open the door", "pull the door open", "swing the door open"),
    "drawer-open-v3": ("open the drawer", "pull the drawer open", "slide the drawer out"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut", "slide the drawer in"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down",
                                "press down on the red button"),
    "peg-insert-side-v3": ("insert the peg into the hole", "push the peg sideways into the hole",
                           "put the peg in the hole"),
    "window-open-v3": ("open the window", "slide the window open", "push the window to open it"),
    "window-close-v3": ("close the window", "slide the window shut", "push the window closed"),
    "button-press-v3": ("press the button", "push the button in", "press the button on the wall"),
    "door-close-v3": ("close the door", "push the door shut", "swing the door closed"),
    "plate-slide-v3": ("slide the plate into the goal", "push the plate to the target",
                       "slide the plate forward"),
    "coffee-button-v3": ("press the coffee machine button", "push the button on the coffee machine",
                         "start the coffee machine"),
    "faucet-open-v3": ("turn the faucet on", "open the faucet", "rotate the faucet handle open"),
    "faucet-close-v3": ("turn the faucet off", "close the faucet", "rotate the faucet handle closed"),
    "handle-press-v3": ("press the handle down", "push the handle down", "press down on the handle"),
    "lever-pull-v3": ("pull the lever up", "lift the lever", "raise the lever"),
    "sweep-into-v3": ("sweep the puck into the hole", "push the puck into the hole",
                      "sweep the block into the goal"),
}

MT10 = ("reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3")
TASK_GROUPS = {"MT10": MT10}


def instructions_for(task: str) -> tuple[str, ...]:
  if task in INSTRUCTIONS:
    return INSTRUCTIONS[task]
  words = task.removesuffix("-v3").replace("-", " ")
  return (words, f"{words} now", f"please {words}")


def expand_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
  """'drawer-open-v3,window-open-v3' or 'MT10' or 'MT50' -> task names (checked against MetaWorld)."""
  names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
  out: list[str] = []
  for name in names:
    if not name:
      continue
    if name == "MT50":
      out.extend(all_task_names())
    else:
      out.extend(TASK_GROUPS.get(name, (name,)))
  known = set(all_task_names())
  for name in out:
    if name not in known:
      close = [k for k in sorted(known) if name.removesuffix("-v3") in k][:3]
      raise UserError(f"unknown MetaWorld task {name!r} in --tasks"
                       f"{f' (did you mean {close}?)' if close else ''}: use v3 names, MT10 or MT50")
  if not out:
    raise UserError("--tasks is empty: name MetaWorld v3 tasks, e.g. drawer-open-v3,window-open-v3 or MT10")
  return tuple(dict.fromkeys(out))


def check_cameras(cameras) -> tuple[str, ...]:
  cameras = tuple(cameras)
  bad = [c for c in cameras if c not in CAMERAS]
  if bad or not cameras:
    raise UserError(f"unknown camera(s) {bad or cameras}: choose from {', '.join(CAMERAS)}")
  return cameras


def require_metaworld():
  # osmesa renders headless with no GPU and no display; a user with EGL sets MUJOCO_GL=egl themselves.
  os.environ.setdefault("MUJOCO_GL", "osmesa")
  try:
    import metaworld
    import metaworld.policies  # noqa: F401 - the experts
  except ImportError as e:
    raise MissingExtraError(f"MetaWorld is not installed ({e}): pip install 'tinyvla_jax[sim]' and the GL library "
                      "(Debian: apt-get install -y libosmesa6)") from None
  return metaworld


def all_task_names() -> tuple[str, ...]:
  metaworld = require_metaworld()
  from metaworld.env_dict import ALL_V3_ENVIRONMENTS
  del metaworld
  return tuple(ALL_V3_ENVIRONMENTS)


@dataclasses.dataclass
class Observation:
  images: np.ndarray  # uint8 [V, H, W, 3], one per camera, the right way up
  state: np.ndarray  # float32 [4]: hand xyz, gripper
  raw: np.ndarray  # float64 [39]: MetaWorld's full observation (privileged; for the expert only)


class MetaWorldTask:
  """One MetaWorld v3 task with seeded setups, a fixed set of cameras and the scripted expert."""

  def __init__(self, task: str, *, cameras=("corner2",), image_size: int = 72):
    metaworld = require_metaworld()
    import mujoco
    from metaworld.policies import ENV_POLICY_MAP
    (self.task,) = expand_tasks([task])
    self.cameras = check_cameras(cameras)
    if image_size < 8:
      raise UserError(f"image size {image_size} is too small: use >= 8 pixels")
    self.image_size = int(image_size)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      benchmark = metaworld.MT1(self.task, seed=0)
    self.env = benchmark.train_classes[self.task]()
    # set_task loads the task's fixed parameters; the setup itself is re-drawn from our seed in reset().
    self.env.set_task(benchmark.train_tasks[0])
    self.expert = ENV_POLICY_MAP[self.task]()
    _fast_rendering(self.env.model)
    try:
      self._renderer = mujoco.Renderer(self.env.model, self.image_size, self.image_size)
    except Exception as e:  # noqa: BLE001 - GL failures come as several exception types
      # An ImportError: what is missing is a library, and the CLIs print it as one line.
      raise MissingExtraError(f"MuJoCo cannot render (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {e}. Install the GL "
                         "library (Debian: apt-get install -y libosmesa6) or set MUJOCO_GL=egl") from None
    self._video_renderers: dict[int, object] = {}
    self._moved = {name: _moved_camera(self.env.model, name) for name in self.cameras if name in MOVED_CAMERAS}
    self._raw = None
    self.steps = 0

  def reset(self, *, setup_seed: int) -> Observation:
    """Place objects and goal from `setup_seed` alone (MetaWorld's seeded sampler), then reset."""
    import mujoco
    env = self.env
    env._freeze_rand_vec = False  # noqa: SLF001 - MetaWorld's documented way to get fresh setups
    env.seeded_rand_vec = True
    env.seed(int(setup_seed))
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      raw, _ = env.reset()
    # MetaWorld's reset moves the goal site and some bodies (window-open's window, drawer-open's drawer) in
    # the *model* after its last kinematics pass, so the world poses the renderer reads are the previous
    # episode's: the first frame drew the old goal dot and window (up to ~220 px of a 72 px frame). Recompute
    # them. mj_kinematics only writes derived poses, which every mj_step recomputes from qpos first, so the
    # simulation is unchanged.
    mujoco.mj_kinematics(env.model, env.data)
    self.setup = np.asarray(env._last_rand_vec, np.float64).copy()  # noqa: SLF001
    self.steps = 0
    self._raw = raw
    return self._observe(raw)

  def placements(self, setup_seeds) -> np.ndarray:
    """[N, D] float64: the `setup` vector reset() draws for each seed (the env is left reset to the last)."""
    vectors = []
    for seed in setup_seeds:
      self.reset(setup_seed=int(seed))
      vectors.append(self.setup)
    return np.stack(vectors) if vectors else np.zeros((0, 0))

  def step(self, action: np.ndarray) -> tuple[Observation, bool]:
    if self.steps >= MAX_EPISODE_STEPS:
      raise RuntimeError(f"{self.task}: MetaWorld episodes end after {MAX_EPISODE_STEPS} steps")
    action = np.clip(np.asarray(action, np.float64).reshape(ACTION_DIM), -1.0, 1.0)
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      raw, _, _, _, info = self.env.step(action)
    self.steps += 1
    self._raw = raw
    return self._observe(raw), bool(info["success"])

  def expert_action(self) -> np.ndarray:
    return expert_action(self.expert, self._raw)

  def render_view(self, camera: str, size: int) -> np.ndarray:
    """A larger frame for videos (uint8 [size, size, 3]); the policy never sees it."""
    import mujoco
    if size not in self._video_renderers:
      self._video_renderers[size] = mujoco.Renderer(self.env.model, size, size)
    return self._render(self._video_renderers[size], camera)[::-1].copy()

  def _observe(self, raw: np.ndarray) -> Observation:
    # MetaWorld's cameras are upside down.
    images = [self._render(self._renderer, camera)[::-1] for camera in self.cameras]
    return Observation(images=np.stack(images), state=np.asarray(raw[:STATE_DIM], np.float32), raw=raw)

  def _render(self, renderer, camera: str) -> np.ndarray:
    if camera not in MOVED_CAMERAS:
      renderer.update_scene(self.env.data, camera=camera)
      return renderer.render()
    # A moved camera is its base camera with the world position MuJoCo computed for this frame swapped for
    # ours while the scene is built, then put back: the simulation never sees the change, and the base
    # camera can be rendered in the same observation.
    base_id, position = self._moved[camera]
    saved = self.env.data.cam_xpos[base_id].copy()
    self.env.data.cam_xpos[base_id] = position
    try:
      renderer.update_scene(self.env.data, camera=base_id)
    finally:
      self.env.data.cam_xpos[base_id] = saved
    return renderer.render()

  def close(self) -> None:
    for r in [self._renderer, *self._video_renderers.values()]:
      r.close()
    self.env.close()


def expert_action(expert, raw: np.ndarray) -> np.ndarray:
  """A scripted expert's action as MetaWorld executes it: the experts' raw outputs reach +-12 and the
  env clips to [-1, 1], so the clipped action is what a demo stores and what a policy is judged by."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the experts warn "Constant(s) may be too high" on every call
    return np.clip(np.asarray(expert.get_action(raw), np.float32), -1.0, 1.0)


def _moved_camera(model, name: str) -> tuple[int, np.ndarray]:
  """(base camera id, world position) of a MOVED_CAMERAS entry; its base must be fixed in the world frame,
  or the position we write would be overwritten by the body's motion semantics."""
  import mujoco
  base, position = MOVED_CAMERAS[name]
  base_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, base)
  if base_id < 0 or model.cam_bodyid[base_id] != 0:
    raise RuntimeError(f"camera {name}: its base camera {base} is not a world-fixed camera in this MetaWorld")
  return base_id, np.asarray(position, np.float64)


def _fast_rendering(model) -> None:
  # Off: multisampling, shadows, reflections. 5-10x faster under OSMesa; objects and colors unchanged.
  model.vis.quality.offsamples = 0
  model.light_castshadow[:] = 0
  model.mat_reflectance[:] = 0
