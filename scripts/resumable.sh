# Sourced by the campaign scripts: start a run, resume it, or skip it when finished, so that
# running a script again after a stop (a session's end, SIGTERM) carries it on from its checkpoints.
#   resumable pretrain|train RUNS NAME [squadqa arguments...]
resumable() {
  local command="$1" runs="$2" name="$3"
  shift 3
  local dir="$runs/$name"
  if grep -qs '"status": "finished"' "$dir/status.json"; then
    echo "reusing the finished run $dir"
    return 0
  fi
  local resume=()
  [ -d "$dir" ] && resume=(--resume)
  squadqa "$command" --runs-dir "$runs" --name "$name" "${resume[@]}" "$@"
}
