"""The fault suite's table (issue 11's benchmark): each injected fault and each bad input on the owner's
path, the test that shows it, and whether it held — printed at the end of every pytest run.

kind "fault": something broke (a dropped connection, a kill, a full disk, a corrupt file, a launch that
fails) and the test asserts nothing was lost. Kind "bad input": something wrong was given and the test
asserts one sentence naming the parameter or step, and no traceback.
"""
FAULTS = {
    "test_download.py::test_a_dropped_connection_resumes_within_the_run": ("fault", "03: connection dropped mid-file"),
    "test_download.py::test_a_killed_download_resumes_on_the_next_run": ("fault", "03: client killed with SIGKILL"),
    "test_download.py::test_a_flipped_byte_is_caught_kept_aside_and_fetched_again": ("fault", "03: a flipped byte"),
    "test_download.py::test_a_full_disk_mid_file_keeps_the_partial": ("fault", "03: the disk fills mid-file"),
    "test_download.py::test_a_zero_filled_file_of_the_right_size_is_refetched": ("fault", "03: a zero-filled file"),
    "test_download.py::test_hub_errors_are_one_sentence_naming_the_file": ("bad input", "03: Hub answers 401/403/404/500"),
    "test_download.py::test_repo_level_errors": ("bad input", "03: repo or revision not found"),
    "test_download.py::test_too_little_disk_is_refused_before_any_byte": ("bad input", "03: too little disk"),
    "test_serve.py::test_a_replacement_that_fails_leaves_the_owner_a_server": ("fault", "05: a replacement fails"),
    "test_serve.py::test_stop_and_status_find_our_server_whatever_state_json_holds": ("fault", "stop: corrupt state"),
    "test_serve.py::test_port_taken_by_someone_else_is_a_clear_error": ("bad input", "05: port taken"),
    "test_serve.py::test_a_model_that_fails_to_load_reports_the_log_tail": ("bad input", "05: a model that fails"),
    "test_serve.py::test_stop_never_signals_a_process_sparkkit_did_not_start": ("fault", "stop: a stranger's pid"),
    "test_records.py::test_two_processes_writing_state_at_once_lose_no_section": ("fault", "state: two writers"),
    "test_records.py::test_corrupt_state_file_is_reported_not_overwritten": ("fault", "state: corrupt file"),
    "test_claude_settings.py::test_a_symlinked_settings_file_is_written_through_keeping_its_mode":
        ("fault", "07: a symlinked settings file"),
    "test_claude_settings.py::test_a_read_only_settings_file_is_refused_not_overwritten":
        ("bad input", "07: a read-only settings file"),
    "test_claude_settings.py::test_a_file_that_cannot_be_replaced_leaves_no_partial":
        ("fault", "07: an immutable settings file"),
    "test_claude_settings.py::test_unusable_settings_file_is_left_untouched": ("bad input", "07: unusable settings"),
    "test_faults.py::test_05_on_partial_state_names_the_step_to_run": ("bad input", "05: partial state"),
    "test_faults.py::test_03_and_04_on_partial_state_name_the_step": ("bad input", "03/04: partial state"),
    "test_faults.py::test_ipv6_loopback_is_a_url_not_an_invalid_url": ("bad input", "05: -p host ::1"),
    "test_faults.py::test_corrupt_state_is_one_sentence_for_every_cli_verb": ("bad input", "CLI: corrupt state"),
    "test_faults.py::test_06_with_a_dead_or_malformed_base_url_is_one_sentence": ("bad input", "06: dead base_url"),
    "test_faults.py::test_06_and_07_without_a_server_say_what_each_accepts": ("bad input", "06/07: no server"),
    "test_faults.py::test_the_launcher_without_a_server_is_one_sentence": ("bad input", "sparkkit claude: no server"),
    "test_faults.py::test_a_lan_key_is_in_no_file_sparkkit_wrote_but_its_0600_key_file":
        ("fault", "05: a LAN key, every file grepped"),
    "test_faults.py::test_07_refuses_a_context_claude_code_cannot_fit_in_one_sentence":
        ("bad input", "07: a context too small for Claude Code"),
    "test_faults.py::test_05_refuses_a_cut_or_foreign_gguf_before_anything_starts":
        ("bad input", "05: a cut or foreign GGUF"),
    "test_choices.py::test_a_bad_choice_is_one_sentence_and_nothing_starts": ("bad input", "sparkkit run: bad choice"),
    "test_build.py::test_a_wrong_hash_is_refused_in_one_sentence_and_the_file_is_not_used":
        ("bad input", "04: sdist with a wrong hash"),
    "test_build.py::test_traversal_and_link_members_are_refused": ("bad input", "04: hostile archive members"),
    "test_host.py::test_snapshot_files_in_odd_encodings_are_read": ("bad input", "01: odd encodings"),
    "test_host.py::test_snapshot_digits_that_are_not_ascii_do_not_crash_01": ("bad input", "01: non-ASCII digits"),
    "test_host.py::test_links_anywhere_in_a_snapshot_never_lead_out_of_it": ("bad input", "01: links out, a FIFO"),
    "test_host.py::test_a_gb10_whose_gpu_does_not_answer_is_diagnosed_as_that": ("fault", "01: GB10 GPU silent"),
    "test_host.py::test_disk_counts_what_03_already_holds_finished_or_partial": ("fault", "01: after a cut download"),
    "test_plan.py::test_a_kv_type_llama_cpp_refuses_for_the_head_size_is_refused_by_the_plan":
        ("bad input", "02: a KV type llama.cpp refuses"),
    "test_bridge.py::test_bad_inputs_are_one_sentence_and_leave_the_running_bridge_alone":
        ("bad input", "07: bridge port taken, engine dead"),
    "test_bridge.py::test_stop_never_signals_a_process_sparkkit_did_not_start": ("fault", "bridge: a stranger's pid"),
    "test_engines.py::test_docker_missing_pieces_are_one_sentence_with_the_fix":
        ("bad input", "04: Docker missing, stopped, no GPU runtime"),
    "test_engines.py::test_a_container_that_exits_is_diagnosed_from_its_log": ("fault", "05: a container exits"),
    "test_engines.py::test_the_same_launch_is_kept_a_new_one_replaces_and_stop_stops_only_ours":
        ("fault", "stop: a stranger's container"),
    "test_engines.py::test_a_failed_replacement_on_the_same_port_starts_the_old_container_again":
        ("fault", "05: a container replacement fails"),
    "test_engines.py::test_ollama_without_the_service_or_the_cli_and_a_context_it_ignores":
        ("bad input", "04/05: Ollama missing, down, context ignored"),
    "test_engines.py::test_engine_other_than_01s_is_refused_naming_the_command": ("bad input", "05: another engine"),
    "test_engines.py::test_an_engine_without_v1_messages_is_bridged_or_refused":
        ("bad input", "07: no /v1/messages, bridge blocked"),
}


def case_of(nodeid: str):
    key = nodeid.split("/")[-1].split("[")[0]
    return FAULTS.get(key)
