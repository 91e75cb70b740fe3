"""The policy server against the real openpi-client: same actions as in process, every bad request answered
with its error while other clients keep being served, API keys, health, batching, disconnects."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tinyvla_jax.serving import wire
from tinyvla_jax.serving.client import RemotePolicy, RemotePolicyError
from tinyvla_jax.serving.server import PolicyServer

from tiny_policy import make_tiny_inference_policy

websocket_client_policy = pytest.importorskip("openpi_client.websocket_client_policy")
# openpi-client 0.1.2 connects without the context manager that websockets >= 17 asks for
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
sync_client = pytest.importorskip("websockets.sync.client")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed


@pytest.fixture(scope="module")
def policy():
  return make_tiny_inference_policy(obs_steps=2)


@pytest.fixture(scope="module")
def server(policy):
  server = PolicyServer(policy, port=0, max_batch=4, max_message_mb=0.05).start_in_thread()
  yield server
  server.stop()


def observation(i=0, k=2, key=True):
  r = np.random.default_rng(i)
  obs = {"images": {"corner2": r.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)},
         "state": r.normal(size=(k, 4)), "prompt": "open the drawer"}
  if key:
    obs["noise_key"] = np.array([7, i], np.uint32)
  return obs


def test_openpi_client_gets_the_actions_of_infer(policy, server):
  client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
  metadata = client.get_server_metadata()
  assert metadata["observation"]["images"]["corner2"]["shape"] == [32, 32, 3] and metadata["action_horizon"] == 16
  assert metadata["observation"]["obs_steps"] == 2 and metadata["policy"] == "tinyvla_jax"
  for i in range(2):
    reply = client.infer(observation(i))
    expected = policy.infer(observation(i))["actions"]
    assert reply["actions"].dtype == np.float32 and reply["actions"].shape == (16, 4)
    np.testing.assert_array_equal(reply["actions"], expected)  # a lone request takes infer's exact path
    assert reply["server_timing"]["infer_ms"] > 0 and reply["server_timing"]["batch_size"] == 1
  # One frame (no history) and no key: accepted, actions in the statistics' range, fresh noise per call.
  a = client.infer(observation(3, k=1, key=False))["actions"]
  b = client.infer(observation(3, k=1, key=False))["actions"]
  assert np.isfinite(a).all() and a.min() >= -2 - 1e-5 and a.max() <= 1 + 1e-5 and not np.array_equal(a, b)
  with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
    assert response.status == 200


def _send_raw(port, frame):
  """Sends one frame on a fresh connection; returns (reply text, close code)."""
  with sync_client.connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
    wire.unpackb(ws.recv())  # the metadata
    ws.send(frame)
    try:
      reply = ws.recv(timeout=30)
      ws.recv(timeout=30)
    except ConnectionClosed as closed:
      return (reply if "reply" in locals() else None), closed.rcvd.code if closed.rcvd else None
  return reply, None


def _bad(**changes):
  obs = observation(0)
  for key, value in changes.items():
    obs[key] = value
  return wire.packb(obs)


@pytest.mark.parametrize("frame, says, code", [
    (b"\xc1\x00garbage", "the frame is not a msgpack message", 1008),
    ("text", "binary msgpack frames", 1008),
    (wire.packb({"images": {}, "prompt": "x"}), "has no 'state'", 1008),
    (_bad(state={b"__ndarray__": True, b"data": bytes(64), b"dtype": "<c8", b"shape": [2, 4]}),
     "dtype complex64, which is not accepted", 1008),
    (_bad(images={"corner2": np.zeros((2, 32, 32, 3), np.float32)}), "has dtype float32; send uint8", 1008),
    (_bad(images={"corner2": np.zeros((2, 64, 64, 3), np.uint8)}), r"shape \[2, 64, 64, 3\]", 1008),
    (_bad(state=np.full((2, 4), np.nan)), "non-finite", 1008),
    (_bad(images={"wrist": np.zeros((32, 32, 3), np.uint8)}), "unknown camera 'wrist'", 1008),
    (_bad(prompt="\u00e9" * 1500), "'prompt'", 1008),  # longer than the byte tokenizer's max_text_len
    (wire.packb({"x": np.zeros(60_000, np.uint8)}), None, 1009),  # over --max_message_mb (0.05 MiB)
])
def test_each_bad_request_gets_its_error_and_the_server_keeps_serving(policy, server, frame, says, code):
  other = RemotePolicy(server.url)  # a client connected before, and one after, are both served
  reply, close_code = _send_raw(server.port, frame)
  assert close_code == code
  if says is not None:
    assert reply.startswith("error: ") and len(reply.splitlines()) == 1
    assert re.search(says, reply), reply
  np.testing.assert_allclose(other.infer(observation(1))["actions"], policy.infer(observation(1))["actions"], atol=1e-5)
  with RemotePolicy(server.url) as after:
    assert after.infer(observation(2))["actions"].shape == (16, 4)
  other.close()


def test_our_client_turns_the_error_reply_into_one_line(server):
  with RemotePolicy(server.url) as client:
    with pytest.raises(RemotePolicyError, match="the server refused the request: error: unknown camera 'wrist'"):
      client.infer({**observation(0), "images": {"wrist": np.zeros((32, 32, 3), np.uint8)}})


def test_a_client_that_leaves_mid_request_is_harmless(policy, server):
  for _ in range(3):
    with sync_client.connect(server.url, max_size=None) as ws:
      ws.recv()
      ws.send(wire.packb(observation(0)))
    # closed before the reply
  with RemotePolicy(server.url) as client:  # (may be batched with the abandoned requests: float rounding)
    np.testing.assert_allclose(client.infer(observation(4))["actions"], policy.infer(observation(4))["actions"],
                               atol=1e-5)
  assert server.stats["batched_requests"] >= 4


def test_requests_that_arrive_together_are_batched_each_with_its_own_actions(policy, server, monkeypatch):
  original, calls = policy.run, []

  def slow_first_run(batch):  # hold the inference thread so that the other requests queue up behind it
    calls.append(len(batch))
    if len(calls) == 1:
      time.sleep(1.0)
    return original(batch)

  monkeypatch.setattr(policy, "run", slow_first_run)
  clients = [RemotePolicy(server.url) for _ in range(5)]
  replies = [None] * 5

  def ask(i):
    replies[i] = clients[i].infer(observation(10 + i))

  threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
  for t in threads:
    t.start()
    time.sleep(0.05)
  for t in threads:
    t.join(60)
  monkeypatch.setattr(policy, "run", original)
  assert max(calls) > 1 and sum(calls) == 5 and max(calls) <= 4  # batched, never above --max_batch
  for i, reply in enumerate(replies):
    # Batched or not, a request's actions are its own (its key, its observation): equal to infer's up to
    # the batched program's float rounding.
    np.testing.assert_allclose(reply["actions"], policy.infer(observation(10 + i))["actions"], atol=1e-4)
  assert max(r["server_timing"]["batch_size"] for r in replies) > 1
  for c in clients:
    c.close()


def test_api_key_refuses_clients_without_it(policy):
  server = PolicyServer(policy, port=0, api_key="s3cret").start_in_thread()
  try:
    with pytest.raises(Exception, match="401"):
      websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port)
    with pytest.raises(RemotePolicyError, match="401"):
      RemotePolicy(server.url, api_key="wrong")
    client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", server.port, api_key="s3cret")
    assert client.infer(observation(0))["actions"].shape == (16, 4)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
      assert response.status == 200  # health checks need no key
  finally:
    server.stop()


def test_bad_server_options_are_one_line_errors(policy):
  with pytest.raises(ValueError, match="--max_batch=0 must be >= 1"):
    PolicyServer(policy, max_batch=0)
  with pytest.raises(ValueError, match="--port=70000"):
    PolicyServer(policy, port=70000)


def test_a_slow_inference_does_not_block_the_event_loop(policy, server, monkeypatch):
  """openpi issue 717: inference on the event loop froze every other client. Here, while the model is busy
  with a slow request, a new client still connects and gets the metadata, a bad request still gets its
  error, and the health check still answers, each well before the slow request ends."""
  original, release = policy.run, threading.Event()

  def held_run(batch):
    release.wait(30)
    return original(batch)

  monkeypatch.setattr(policy, "run", held_run)
  slow = RemotePolicy(server.url)
  result = {}
  waiting = threading.Thread(target=lambda: result.update(reply=slow.infer(observation(20))))
  waiting.start()
  try:
    time.sleep(0.2)  # the slow request is now inside the model call
    start = time.monotonic()
    with RemotePolicy(server.url) as fresh:
      assert fresh.metadata["policy"] == "tinyvla_jax"
    reply, code = _send_raw(server.port, b"\xc1")
    assert reply.startswith("error: ") and code == 1008
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
      assert response.status == 200
    assert time.monotonic() - start < 5 and "reply" not in result  # all answered while the model is still busy
  finally:
    release.set()
    waiting.join(60)
  monkeypatch.setattr(policy, "run", original)
  assert result["reply"]["actions"].shape == (16, 4)
  slow.close()
