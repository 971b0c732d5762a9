"""Compressed SecAgg+ on Flower: a server workflow and a client mod that extend Flower's own.

Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) clips and quantizes the model
*weights* at a fixed range and sends the masked vector as int64 arrays. Here the same protocol
(Flower's stages, key agreement, Shamir sharing, pairwise and private masks, dropout recovery)
carries a codec's integers instead (:mod:`tasks.fl.codecs`): the client encodes its *update*
(new weights minus the round's global weights), masks it in the narrowest field that holds the
round's sum, and sends it packed at that many bits; the server unmasks the sum of the survivors
and decodes the mean update.

Weighting: each client appends its weight ``w`` (1 under uniform weighting, its example count
capped at ``max_weight`` otherwise) and multiplies its integers by ``w`` before masking, so
that the unmasked sum holds ``sum(w * code)`` and ``sum(w)``: the server decodes the weighted
mean and learns no client's weight. The field is widened by ``log2(max_weight)`` bits to hold
that sum. Stochastic rounding stays unbiased (``E[w * code] = w * E[code]``); the rounding
noise of the weighted mean is ``sum(w**2 var) / sum(w)**2``, more than the uniform mean's when
weights differ. Secure Indexing's counts become weighted counts.

Reused from Flower unchanged: the setup, share-keys and unmask stages on the client
(``_setup``, ``_share_keys``, ``_unmask``), their stage and config checks, the server's setup
and share-keys stages, ``pseudo_rand_gen``, ``combine_shares`` and ``generate_shared_key``.
Rewritten: the client's masked-vector stage (encode + pack instead of Flower's fixed-point
quantization of weights) and the server's collect and unmask stages (unpack, decode).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen, share_keys_plaintext_separate
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.serverapp.grid import Grid
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from tasks.fl.codecs import SecureIndexer, check_field, pack, unpack
from tasks.fl.rounds import RoundPlan, codec_from_config, flatten, unflatten
from tasks.fl.strategy import partition_id

# The module, not the function of the same name that its package exports.
flower_mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")


class SecAggAbort(RuntimeError):
    """Secure aggregation cannot finish a round: too few clients survived."""


def _field(mod_range: Any) -> tuple[int, int]:
    """The modulus (a power of two) and its width in bits."""
    mod_range = int(mod_range)
    return mod_range, mod_range.bit_length() - 1


# -- client -------------------------------------------------------------------------------------


def compressed_secaggplus_mod(msg: Message, ctxt: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Flower's ``secaggplus_mod`` with the masked-vector stage carrying a packed, compressed update."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    if RECORD_KEY_STATE not in ctxt.state.config_records:
        ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord({})
    state = flower_mod.SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    flower_mod.check_stage(state.current_stage, configs)
    state.current_stage = cast(str, configs.pop(Key.STAGE))
    flower_mod.check_configs(state.current_stage, configs)

    out_content = RecordDict()
    if state.current_stage == Stage.SETUP:
        state.nid = msg.metadata.dst_node_id
        res = flower_mod._setup(state, configs)
    elif state.current_stage == Stage.SHARE_KEYS:
        res = flower_mod._share_keys(state, configs)
    elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
        fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
        out_content = call_next(msg, ctxt).content
        fitres = compat.recorddict_to_fitres(out_content, keep_input=True)
        delta = flatten(parameters_to_ndarrays(fitres.parameters)) - flatten(parameters_to_ndarrays(fitins.parameters))
        values = _encode(delta, fitins.config, partition_id(ctxt), ctxt)
        weight = _weight(fitres.num_examples, fitins.config)
        res = _masked_packed_update(state, configs, np.append(values * weight, weight))
        for arr_record in out_content.array_records.values():
            arr_record.clear()
    elif state.current_stage == Stage.UNMASK:
        res = flower_mod._unmask(state, configs)
        # The server asks for unmasking shares only from the nodes whose masked vector it
        # aggregated: now this node knows its update counted, and keeps what it left out.
        commit_residual(ctxt)
    else:
        raise ValueError(f"unknown SecAgg+ stage {state.current_stage!r}")
    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    out_content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(res, False)
    return Message(out_content, reply_to=msg)


RESIDUAL_KEY, PENDING_KEY = "fl.residual", "fl.residual_pending"


def _encode(delta: np.ndarray, fit_config: dict, partition: int, ctxt: Context) -> np.ndarray:
    """The update's integers under the round's codec, rounding seeded by (seed, round, partition).

    Product quantization keeps error feedback: what a round's codewords left out of the update
    is added to the client's next update (kept in the node's ``Context.state``, which the
    Simulation Engine keeps per node across rounds, as it keeps SecAgg+'s state). The new
    residual waits as pending until :func:`commit_residual`, so that a client whose update was
    not aggregated (it dropped out after encoding) does not drop its old residual.
    """
    codec = codec_from_config(fit_config)
    rng = np.random.default_rng([int(fit_config["fl.seed"]), int(fit_config["fl.round"]), partition])
    if not isinstance(codec, SecureIndexer):
        values = codec.encode(delta, rng)
    else:
        kept = ctxt.state.config_records.get(RESIDUAL_KEY)
        residual = np.frombuffer(kept["residual"], dtype=np.float32) if kept is not None else 0.0
        target = (delta + residual).astype(np.float32)
        values = codec.encode(target, rng)
        residual = target - codec.decode(values, 1, target.size)
        ctxt.state.config_records[PENDING_KEY] = ConfigRecord({"residual": residual.astype(np.float32).tobytes()})
    if values.size and (values.min() < 0 or values.max() > codec.max_value()):
        raise ValueError(f"codec produced values outside [0, {codec.max_value()}]")
    return values


def commit_residual(ctxt: Context) -> None:
    """Make the last encoded round's residual the one the next update starts from."""
    pending = ctxt.state.config_records.pop(PENDING_KEY, None)
    if pending is not None:
        ctxt.state.config_records[RESIDUAL_KEY] = pending


def _weight(num_examples: int, fit_config: dict) -> int:
    """The client's weight (its fit result's num_examples), within the field's ``[1, max_weight]``."""
    cap = int(fit_config["fl.max_weight"])
    if not 1 <= num_examples <= cap:
        raise ValueError(f"client weight {num_examples} outside [1, {cap}]: the field holds max_weight {cap}")
    return int(num_examples)


def _masked_packed_update(state: Any, configs: ConfigRecord, values: np.ndarray) -> dict:
    """Add Flower's private and pairwise masks to the codec's integers mod the field, pack them."""
    ciphertexts = cast(list[bytes], configs[Key.CIPHERTEXT_LIST])
    srcs = cast(list[int], configs[Key.SOURCE_LIST])
    if len(ciphertexts) + 1 < state.threshold:
        raise ValueError("not enough available neighbour clients")
    for src, ciphertext in zip(srcs, ciphertexts, strict=True):
        actual_src, dst, rd_seed_share, sk1_share = share_keys_plaintext_separate(decrypt(state.ss2_dict[src], ciphertext))
        if src != actual_src or dst != state.nid:
            raise ValueError(f"node {state.nid}: share from {actual_src} to {dst} arrived as {src} -> {state.nid}")
        state.rd_seed_share_dict[src] = rd_seed_share
        state.sk1_share_dict[src] = sk1_share

    mod_range, bits = _field(state.mod_range)
    shape = [values.shape]
    masked = values + pseudo_rand_gen(state.rd_seed, mod_range, shape)[0]
    for node_id in srcs:
        shared_key = generate_shared_key(bytes_to_private_key(state.sk1),
                                         bytes_to_public_key(state.public_keys_dict[node_id][0]))
        pairwise = pseudo_rand_gen(shared_key, mod_range, shape)[0]
        masked = masked + pairwise if state.nid > node_id else masked - pairwise
    return {Key.MASKED_PARAMETERS: [pack(masked & (mod_range - 1), bits)]}


# -- server -------------------------------------------------------------------------------------


class AbortingSecAggPlusWorkflow(SecAggPlusWorkflow):
    """Flower's SecAgg+ workflow, aborting the run with the reason when too few clients survive.

    Flower's own logs an error and skips the round, so a run would go on without training.
    """

    def _check_threshold(self, state: WorkflowState) -> bool:
        for node_id in state.sampled_node_ids:
            alive = state.nid_to_neighbours[node_id] & state.active_node_ids
            if len(alive) < state.threshold:
                raise SecAggAbort(
                    f"secure aggregation aborted: node {node_id} has {len(alive)} surviving neighbours "
                    f"(of {len(state.nid_to_neighbours[node_id])}), fewer than the reconstruction threshold "
                    f"{state.threshold}; {len(state.active_node_ids)} of {len(state.sampled_node_ids)} clients are left"
                    + (f" (first client error: {state.failures[0]})" if state.failures else ""))
        return True


class CompressedSecAggPlusWorkflow(AbortingSecAggPlusWorkflow):
    """``SecAggPlusWorkflow`` over a codec's integers: packed masked vectors, mean update decoded.

    ``plan`` gives each round's codec (its shared parameters travel in the fit config), the
    field width and the model size; the decoded mean update is added to the global weights and
    handed to the strategy as every survivor's result, so Flower's ``FedAvg`` keeps it as is.
    """

    def __init__(self, plan: RoundPlan, *, num_shares: int | float, reconstruction_threshold: int | float,
                 timeout: float | None = None) -> None:
        self.plan = plan
        super().__init__(num_shares, reconstruction_threshold, clipping_range=1.0,
                         quantization_range=plan.max_value, modulus_range=2**plan.field_bits, timeout=timeout)
        self.last_sum: np.ndarray | None = None  # the unmasked integer sum of the last round (for tests)
        self.last_survivors: set[int] = set()

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        check_field(self.plan.max_value, len(state.active_node_ids), self.plan.field_bits)

        def make(nid: int) -> Message:
            content = state.nid_to_fitins[nid]
            content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({
                Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                Key.CIPHERTEXT_LIST: state.forward_ciphertexts[nid],
                Key.SOURCE_LIST: state.forward_srcs[nid]})
            return Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN,
                           group_id=str(cfg[WorkflowKey.CURRENT_ROUND]))

        msgs = list(grid.send_and_receive([make(nid) for nid in state.active_node_ids], timeout=self.timeout))
        state.active_node_ids = {m.metadata.src_node_id for m in msgs if not m.has_error()}
        del state.forward_ciphertexts, state.forward_srcs, state.nid_to_fitins
        length = self.plan.codec(int(cfg[WorkflowKey.CURRENT_ROUND])).length(self.plan.dim) + 1  # + the weight
        total = np.zeros(length, dtype=np.int64)
        for msg in msgs:
            if msg.has_error():
                state.failures.append(Exception(msg.error))
                continue
            packed = cast(list[bytes], msg.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
            total += unpack(packed[0], self.plan.field_bits, length)
            proxy = state.nid_to_proxies[msg.metadata.src_node_id]
            state.legacy_results.append((proxy, compat.recorddict_to_fitres(msg.content, True)))
        state.aggregate_ndarrays = [total & (state.mod_range - 1)]
        return self._check_threshold(state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = int(cfg[WorkflowKey.CURRENT_ROUND])
        active, dead = state.active_node_ids, state.sampled_node_ids - state.active_node_ids

        def make(nid: int) -> Message:
            neighbours = state.nid_to_neighbours[nid]
            content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({
                Key.STAGE: Stage.UNMASK,
                Key.ACTIVE_NODE_ID_LIST: list(neighbours & active),
                Key.DEAD_NODE_ID_LIST: list(neighbours & dead)})})
            return Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(current_round))

        msgs = list(grid.send_and_receive([make(nid) for nid in active], timeout=self.timeout))
        shares: dict[int, list[bytes]] = {nid: [] for nid in state.sampled_node_ids}
        for msg in msgs:
            if msg.has_error():
                state.failures.append(Exception(msg.error))
                continue
            res = msg.content.config_records[RECORD_KEY_CONFIGS]
            for owner, share in zip(cast(list[int], res[Key.NODE_ID_LIST]), cast(list[bytes], res[Key.SHARE_LIST]), strict=True):
                shares[owner].append(share)
        total = self._remove_masks(state, shares, active)
        self.last_sum, self.last_survivors = total, set(active)
        return self._apply(context, state, current_round, total, len(active))

    def _remove_masks(self, state: WorkflowState, shares: dict[int, list[bytes]], active: set[int]) -> np.ndarray:
        """Flower's unmasking: subtract survivors' private masks, undo dropped clients' pairwise masks."""
        total = state.aggregate_ndarrays[0]
        shape = [total.shape]
        for nid, share_list in shares.items():
            if len(share_list) < state.threshold:
                raise SecAggAbort(f"secure aggregation aborted: {len(share_list)} shares of node {nid}'s secret "
                                  f"arrived, fewer than the reconstruction threshold {state.threshold}")
            secret = combine_shares(share_list)
            if nid in active:
                total = total - pseudo_rand_gen(secret, state.mod_range, shape)[0]
                continue
            for neighbour in state.nid_to_neighbours[nid] - {nid}:
                key = generate_shared_key(bytes_to_private_key(secret),
                                          bytes_to_public_key(state.nid_to_publickeys[neighbour][0]))
                mask = pseudo_rand_gen(key, state.mod_range, shape)[0]
                total = total + mask if nid > neighbour else total - mask
        return total & (state.mod_range - 1)

    def _apply(self, context: LegacyContext, state: WorkflowState, current_round: int, total: np.ndarray,
               survivors: int) -> bool:
        codec = self.plan.codec(current_round)
        weight = int(total[-1])  # the survivors' summed weights (their count under uniform weighting)
        if not survivors <= weight <= survivors * self.plan.max_weight:
            raise SecAggAbort(f"round {current_round}: the unmasked weights sum to {weight}, impossible for {survivors} "
                              f"clients of weight 1..{self.plan.max_weight}")
        mean_delta = codec.decode(total[:-1], weight, self.plan.dim)
        self.plan.record_aggregate(current_round, mean_delta)
        global_arrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))
        new_weights = unflatten(flatten(global_arrays) + mean_delta, global_arrays)
        parameters = ndarrays_to_parameters(new_weights)
        for _, fitres in state.legacy_results:
            fitres.parameters = parameters
        aggregated, metrics = context.strategy.aggregate_fit(current_round, state.legacy_results, state.failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
        return True
