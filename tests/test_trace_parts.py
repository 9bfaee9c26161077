"""benchmarks/trace_parts.py, the trace bookkeeping of benchmarks/profile_step.py, on hand-written
inputs: which part of the step a kernel is charged to, and how much wall time kernels cover (the
profile tables of issue 17 rest on these)."""

from benchmarks import trace_parts

HLO = """
HloModule jit_run, entry_computation_layout={()}

%fused_computation.3 (p0: f32[64,256]) -> f32[64,256] {
  ROOT %add.1 = f32[64,256]{1,0} add(%p0, %p0), metadata={op_name="jit(run)/vmap(while)/body/update/critic_step/critic_adam/add" source_file="x.py"}
}

ENTRY %main {
  %loop_add_fusion.3 = f32[64,256]{1,0} fusion(%a), kind=kLoop, calls=%fused_computation.3, metadata={op_name="jit(run)/vmap(while)/body/update/critic_step/critic_adam/add"}
  %custom-call.12 = (f32[640,256,256]{2,1,0}) custom-call(%b, %c), custom_call_target="__cublas$gemm", metadata={op_name="jit(run)/vmap(while)/body/update/critic_step/td_target/dot_general"}
  ROOT %input_reduce_fusion = f32[64]{0} fusion(%d), kind=kInput, metadata={op_name="jit(run)/vmap(while)/body/env_step/reset/reduce_sum"}
}
"""


def test_instruction_names_map_to_their_name_stacks_as_kernels_spell_them():
  names = trace_parts.hlo_op_names(HLO)
  assert names["loop_add_fusion_3"].endswith("critic_step/critic_adam/add")
  assert names["custom_call_12"].endswith("td_target/dot_general")
  assert names["input_reduce_fusion"].endswith("env_step/reset/reduce_sum")
  assert "fused_computation_3" not in names      # a computation header, not an instruction


def test_a_kernel_is_charged_to_the_innermost_known_part():
  assert trace_parts.part_of("jit(run)/while/body/update/critic_step/td_target/dot") == \
      "td_target"
  assert trace_parts.part_of("jit(run)/while/body/env_step/reset/add") == "reset"
  assert trace_parts.part_of("jit(run)/while/body/env_step/mul") == "env_step"
  assert trace_parts.part_of("jit(run)/while/body/update/select_n") == "update"
  assert trace_parts.part_of("jit(run)/while/body/add") == "other"
  # A scope name must be a whole element of the stack, not part of another name.
  assert trace_parts.part_of("jit(run)/body/reset_counter/add") == "other"


def test_events_are_attributed_by_name_stack_then_by_hlo_instruction():
  names = trace_parts.hlo_op_names(HLO)
  events = [
      ("loop_add_fusion_3", {}, 0, 10),                                     # kernel named so
      ("sm90_xmma_gemm", {"hlo_op": "custom-call.12"}, 5, 20),              # via its hlo_op
      ("k", {"tf_op": "jit(run)/while/body/buffer_insert/scatter"}, 40, 5),  # its own stack
      ("memcpy", {}, 50, 3),
  ]
  parts = [row[0] for row in trace_parts.attribute(events, names)]
  assert parts == ["critic_adam", "td_target", "buffer_insert", "unattributed"]


def test_busy_time_counts_overlapping_kernels_once():
  assert trace_parts.union_ns([(0, 10), (5, 20), (30, 35), (31, 33)]) == 25
  assert trace_parts.union_ns([(10, 20), (0, 5)]) == 15
  assert trace_parts.union_ns([]) == 0
