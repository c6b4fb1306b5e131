#!/usr/bin/env bash
# Builds container images without Docker or a registry, and imports them into the cluster's containerd.
# An image is Debian bookworm packages (mmdebstrap) or nothing (scratch), plus files, plus an OCI config;
# umoci assembles it and skopeo writes a docker-archive tarball, cached under
# $SANDBOX_CACHE/images/<name>-<hash of every input>.tar, so an unchanged image is never rebuilt.
# Downloaded .deb files are shared by all builds in $SANDBOX_CACHE/apt-archives (not an input: an image
# is the same with or without it). Each build prints its phases with their elapsed time; the runtime
# images build $SANDBOX_IMAGE_JOBS (default 2) at a time, each logging to $SANDBOX_CACHE/images/logs/.
#
#   hack/images.sh build                     the cluster's images: pause and the runtime images of
#                                            languages.yaml; imports them if the cluster runs
#   hack/images.sh image NAME:TAG [options]  one image; prints the tarball path. Options:
#       --packages "P1 P2"   Debian packages (omit for an image from scratch)
#       --copy SRC:DEST      copy a file or directory into the image (repeatable)
#       --run CMD            run a shell command chrooted in the image after the copies (repeatable)
#       --entrypoint PATH    entrypoint (repeatable: one argv element each)
#       --user UID:GID       default 65532:65532 (an /etc/passwd entry "sandbox" is added for Debian images)
#       --env KEY=VALUE      repeatable
#       --import             import into the running cluster's containerd afterwards
#   hack/images.sh tarballs                  build the cluster's images, print their tarball paths
#                                            (pause first, then the runtime images in the catalogue's order)
#   hack/images.sh import TARBALL...         import tarballs into the cluster's containerd (k8s.io namespace)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGES_CACHE=$SANDBOX_CACHE/images
IMAGE_LOGS=$IMAGES_CACHE/logs
DEB_CACHE=$SANDBOX_CACHE/apt-archives
IMAGE_JOBS=${SANDBOX_IMAGE_JOBS:-2}
RUNTIME_USER=65532:65532
[[ $IMAGE_JOBS =~ ^[1-9][0-9]*$ ]] || die "SANDBOX_IMAGE_JOBS=$IMAGE_JOBS: give the number of images to build at once, e.g. 2"
# The runtime images, one `NAME|PACKAGES` line per language of the catalogue (with python3 for the runner).
mapfile -t RUNTIME_IMAGES < <(catalogue images)
[ ${#RUNTIME_IMAGES[@]} -gt 0 ] || die "the language catalogue lists no image to build"

# Progress goes to fd 3, the terminal, also while a background build's stderr goes to its log.
exec 3>&2
BUILD_LOG="" # the log of the build this (sub)shell runs, if it has one
IMAGE_LABEL=""
IMAGE_START=$SECONDS

# progress MESSAGE: one line of the image being built, with the time since its build started.
progress() {
  local line
  printf -v line '    %-24s %4ss  %s' "$IMAGE_LABEL" $((SECONDS - IMAGE_START)) "$*"
  printf '%s\n' "$line" >&3
  [ -z "$BUILD_LOG" ] || printf '%s\n' "$line" >&2
}

# The host's bookworm apt sources, so images come from the same (possibly snapshot) mirror as the host.
apt_sources() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] && grep -qE '^[^#]*\bbookworm\b' "$file" && grep -qiE '^[^#]*debian' "$file" && printf '%s\n' "$file"
  done
  return 0
}

# Hash of everything that determines the image: this script's code (not its comments), the arguments,
# copied content, apt sources. Not the .deb cache: it only saves downloads of the same files.
input_hash() { # NAME PACKAGES COPIES RUNS ENTRYPOINT USER ENV
  {
    grep -v '^[[:space:]]*#' "${BASH_SOURCE[0]}"
    printf '%s\n' "$@"
    local copy src
    for copy in $3; do
      src=${copy%%:*}
      tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$(dirname "$src")" -cf - "$(basename "$src")"
    done
    if [ -n "$2" ]; then apt_sources | xargs -r cat; fi
  } | sha256sum | cut -c1-16
}

image_stem() { printf '%s/%s\n' "$IMAGES_CACHE" "$(tr '/:' '__' <<<"$1")"; } # NAME
image_tarball() { printf '%s-%s.tar\n' "$(image_stem "$1")" "$(input_hash "$@")"; } # as input_hash

# mmdebstrap's output on stdin: its steps become progress lines, the rest goes to stderr (all of it when
# logging, else only what is not an I: line, as with --quiet).
mmdebstrap_progress() {
  local line
  while IFS= read -r line; do
    case $line in
      "I: running apt-get update"*) progress "apt-get update" ;;
      "I: downloading packages"*) progress "download the essential packages" ;;
      "I: extracting archives"*) progress "extract the essential packages" ;;
      "I: installing essential packages"*) progress "install the essential packages" ;;
      "I: installing remaining packages"*) progress "download and install the packages" ;;
      "I: "*) [ -z "$BUILD_LOG" ] || printf '%s\n' "$line" >&2 ;;
      *) printf '%s\n' "$line" >&2 ;;
    esac
  done
}

# Hard-links the cached .deb files into a new chroot's apt cache (the setup hook; $1 is the chroot), so
# apt downloads only the others. A file vanishing meanwhile (superseded, see keep_debs) is only a miss.
# shellcheck disable=SC2016 # expanded by mmdebstrap's hook shell
DEB_CACHE_HOOK='mkdir -p "$1/var/cache/apt/archives" &&
  { find "$SANDBOX_DEB_CACHE" -maxdepth 1 -name "*.deb" -exec cp -l -t "$1/var/cache/apt/archives" {} + 2>/dev/null ||
    find "$SANDBOX_DEB_CACHE" -maxdepth 1 -name "*.deb" -exec cp -n -t "$1/var/cache/apt/archives" {} + 2>/dev/null || true; }'

# keep_debs ROOTFS: adds the .deb files a build downloaded to the cache, and drops the cached versions
# of its packages other than those it installed (the mirror moved on), so the cache stays bounded.
# Safe with builds running at once: a file enters the cache whole, by link(2) or rename(2).
keep_debs() {
  local archives=$1/var/cache/apt/archives deb name added=0 bytes=0 package
  for deb in "$archives"/*.deb; do
    [ -f "$deb" ] || continue
    name=${deb##*/}
    [ -e "$DEB_CACHE/$name" ] && continue
    if ! ln "$deb" "$DEB_CACHE/$name" 2>/dev/null; then
      cp "$deb" "$DEB_CACHE/.$name.$BASHPID" && mv -f "$DEB_CACHE/.$name.$BASHPID" "$DEB_CACHE/$name"
    fi
    added=$((added + 1)) bytes=$((bytes + $(stat -c %s "$deb")))
  done
  while IFS= read -r name; do
    package=${name%%_*}
    for deb in "$DEB_CACHE/${package}_"*"_${name##*_}"; do
      [ "$deb" = "$DEB_CACHE/$name" ] || rm -f "$deb"
    done
  done < <(dpkg-query --admindir="$1/var/lib/dpkg" -W -f '${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/g')
  progress "downloaded $added packages ($((bytes / 1048576)) MiB), now shared in $DEB_CACHE"
}

# Builds one image (in a subshell: its clean-up trap and errors stay its own); prints the tarball path.
build_image() ( # NAME PACKAGES COPIES RUNS ENTRYPOINT USER ENV
  local name=$1 packages=$2 copies=$3 runs=$4 entrypoint=$5 user=$6 env=$7
  local stem tarball work
  IMAGE_LABEL=${name##*/} IMAGE_START=$SECONDS
  stem=$(image_stem "$name")
  tarball=$(image_tarball "$@")
  if [ -f "$tarball" ]; then
    progress "cached: $tarball"
    printf '%s\n' "$tarball"
    return 0
  fi
  require_root
  ensure_debian_packages umoci skopeo
  [ -z "$packages" ] || ensure_debian_packages mmdebstrap debian-archive-keyring
  mkdir -p "$IMAGES_CACHE" "$DEB_CACHE"
  work=$(mktemp -d "$IMAGES_CACHE/.build-XXXXXX")
  # --one-file-system: a build stopped midway may leave the chroot's /proc, /sys or /dev mounted.
  trap 'rm -rf --one-file-system "$work"' EXIT
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:image"
  umoci unpack --image "$work/oci:image" "$work/bundle" >/dev/null
  if [ -n "$packages" ]; then
    progress "mmdebstrap bookworm: $packages"
    local sources=()
    mapfile -t sources < <(apt_sources)
    rmdir "$work/bundle/rootfs"
    # essential = the Essential:yes set (no apt in the image); docs and locales left out to stay small.
    # The apt cache is kept until keep_debs has taken the new .deb files, then emptied. man1 stays, empty:
    # postinsts registering a man page as an alternative's slave fail without it (openjdk-17-jre-headless).
    # shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
    SANDBOX_DEB_CACHE=$DEB_CACHE nice mmdebstrap --variant=essential --include="${packages// /,}" \
      --aptopt='APT::Install-Recommends "false"' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --skip=essential/unlink --skip=cleanup/apt/cache --setup-hook="$DEB_CACHE_HOOK" \
      --essential-hook='mkdir -p "$1/usr/share/man/man1"' \
      --customize-hook='echo "sandbox:x:65532:65532:sandbox:/tmp:/usr/sbin/nologin" >> "$1/etc/passwd"' \
      --customize-hook='echo "sandbox:x:65532:" >> "$1/etc/group"' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
      bookworm "$work/bundle/rootfs" "${sources[@]}" 2>&1 | mmdebstrap_progress
    keep_debs "$work/bundle/rootfs"
    rm -rf "$work/bundle/rootfs"/var/cache/apt/*
  fi
  local copy run
  for copy in $copies; do
    mkdir -p "$(dirname "$work/bundle/rootfs/${copy#*:}")"
    cp -a "${copy%%:*}" "$work/bundle/rootfs/${copy#*:}"
  done
  while IFS= read -r run; do
    [ -z "$run" ] || { progress "run: $run"; chroot "$work/bundle/rootfs" /bin/sh -c "$run" >&2; }
  done <<<"$runs"
  progress "umoci repack ($(du -sh "$work/bundle/rootfs" | cut -f1) root file system)"
  umoci repack --image "$work/oci:image" "$work/bundle" >&2
  local config=(--config.user="$user" --config.workingdir=/)
  local item
  for item in $entrypoint; do config+=(--config.entrypoint="$item"); done
  for item in $env; do config+=(--config.env="$item"); done
  umoci config --image "$work/oci:image" "${config[@]}" >&2
  progress "skopeo copy to a docker-archive"
  skopeo copy --quiet "oci:$work/oci:image" "docker-archive:$work/image.tar:$name" >&2
  # Earlier builds of this image are superseded (the hash is 16 hex digits: no other image's name).
  find "$IMAGES_CACHE" -maxdepth 1 -name "${stem##*/}-????????????????.tar" ! -path "$tarball" -delete
  mv "$work/image.tar" "$tarball"
  progress "built: $tarball ($(du -h "$tarball" | cut -f1))"
  printf '%s\n' "$tarball"
)

# Imports each tarball once per cluster state (a marker per tarball in the state dir).
import_images() {
  local tarball marker
  [ -S "$CONTAINERD_SOCKET" ] || die "the cluster's containerd is not running ($CONTAINERD_SOCKET): run 'make cluster-up' first"
  mkdir -p "$SANDBOX_CLUSTER_DIR/images"
  for tarball in "$@"; do
    marker="$SANDBOX_CLUSTER_DIR/images/$(basename "$tarball").imported"
    [ -f "$marker" ] && continue
    ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io images import "$tarball" >/dev/null
    touch "$marker"
    log "    imported $(basename "$tarball")"
  done
}

# The runtime images not yet cached, IMAGE_JOBS at a time, each in its own process group (an interrupt
# stops all of it) with its output in $IMAGE_LOGS; sets RUNTIME_TARBALLS. Run in the script's own shell,
# not a $(...), so that a signal to the script reaches the traps that stop the builds. Every build runs
# to its end; any failure fails the whole, naming the image and its log.
build_runtime_images() {
  local entry name packages tarball start=$SECONDS
  local todo=() tarballs=() failed=()
  for entry in "${RUNTIME_IMAGES[@]}"; do
    name=${entry%%|*} packages=${entry#*|}
    tarball=$(image_tarball "$name" "$packages" "" "" "" "$RUNTIME_USER" "")
    tarballs+=("$tarball")
    [ -f "$tarball" ] || todo+=("$entry")
  done
  RUNTIME_TARBALLS=("${tarballs[@]}")
  if [ ${#todo[@]} -eq 0 ]; then
    log "    runtime images: all ${#RUNTIME_IMAGES[@]} cached in $IMAGES_CACHE"
    return 0
  fi
  require_root
  # Installed once here: builds running at once would contend for dpkg's lock.
  ensure_debian_packages umoci skopeo mmdebstrap debian-archive-keyring
  mkdir -p "$IMAGE_LOGS" "$DEB_CACHE"
  log "    runtime images: building ${#todo[@]} of ${#RUNTIME_IMAGES[@]}, $IMAGE_JOBS at a time (SANDBOX_IMAGE_JOBS), logs in $IMAGE_LOGS"
  local -A running=() # pid -> NAME|PACKAGES
  local -A began=()   # pid -> SECONDS at its start
  # shellcheck disable=SC2317 # run by the traps
  stop_builds() {
    local pid
    for pid in "${!running[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    [ ${#running[@]} -eq 0 ] || wait "${!running[@]}" 2>/dev/null || true
  }
  trap stop_builds EXIT
  trap 'log "interrupted: stopping the image builds"; exit 130' INT TERM
  local next=0 pid status log_file
  while [ "$next" -lt ${#todo[@]} ] || [ ${#running[@]} -gt 0 ]; do
    while [ "$next" -lt ${#todo[@]} ] && [ ${#running[@]} -lt "$IMAGE_JOBS" ]; do
      entry=${todo[next]} next=$((next + 1))
      log_file=$IMAGE_LOGS/$(tr '/:' '__' <<<"${entry%%|*}").log
      set -m # job control on: the build gets its own process group
      (
        BUILD_LOG=$log_file
        exec 2>"$BUILD_LOG" </dev/null
        build_image "${entry%%|*}" "${entry#*|}" "" "" "" "$RUNTIME_USER" "" >/dev/null
      ) &
      set +m
      running[$!]=$entry began[$!]=$SECONDS
    done
    status=0
    wait -n -p pid "${!running[@]}" || status=$?
    entry=${running[$pid]}
    unset "running[$pid]"
    if [ "$status" -ne 0 ]; then
      name=${entry%%|*} log_file=$IMAGE_LOGS/$(tr '/:' '__' <<<"$name").log
      failed+=("$name")
      log "error: the image $name failed (exit status $status) after $((SECONDS - began[$pid]))s; the end of its log $log_file:"
      tail -n 15 "$log_file" | sed 's/^/      | /' >&2
      log "    rebuild it alone with: hack/images.sh image $name --packages \"${entry#*|}\""
    fi
  done
  trap - EXIT INT TERM
  [ ${#failed[@]} -eq 0 ] ||
    die "${#failed[@]} runtime image(s) failed: ${failed[*]} (each one's log is named above; fix it, then rerun: the built ones are cached)"
  log "    runtime images: ${#todo[@]} built in $((SECONDS - start))s"
}

# The images every cluster needs; sets CLUSTER_TARBALLS.
cluster_images() {
  local pause
  "$HACK_DIR/build.sh" pause >&2
  pause=$(build_image "$PAUSE_IMAGE" "" "$PAUSE_BIN/pause:/pause" "" /pause 65535:65535 "")
  build_runtime_images
  CLUSTER_TARBALLS=("$pause" "${RUNTIME_TARBALLS[@]}")
}

image_command() { # NAME [options]
  local name=${1:?usage: hack/images.sh image NAME:TAG [options]} packages="" copies="" runs="" entrypoint=""
  local user=$RUNTIME_USER env="" import=false
  shift
  [[ $name == */*:* && $name != *:latest ]] ||
    die "image name '$name' must be fully qualified with a version tag, e.g. localhost/sandbox/api:0.1.0"
  while [ $# -gt 0 ]; do
    case $1 in
      --packages) packages=$2; shift 2 ;;
      --copy) [ -e "${2%%:*}" ] || die "--copy $2: no such file"; copies+="$(realpath "${2%%:*}"):${2#*:} "; shift 2 ;;
      --run) runs+="$2"$'\n'; shift 2 ;;
      --entrypoint) entrypoint+="$2 "; shift 2 ;;
      --user) user=$2; shift 2 ;;
      --env) env+="$2 "; shift 2 ;;
      --import) import=true; shift ;;
      *) die "unknown option '$1' (see the header of hack/images.sh)" ;;
    esac
  done
  local tarball
  tarball=$(build_image "$name" "$packages" "$copies" "$runs" "$entrypoint" "$user" "$env")
  [ "$import" = false ] || import_images "$tarball"
  printf '%s\n' "$tarball"
}

main() {
  case ${1:-} in
    build)
      cluster_images
      if [ -S "$CONTAINERD_SOCKET" ]; then import_images "${CLUSTER_TARBALLS[@]}"; fi ;;
    tarballs) cluster_images; printf '%s\n' "${CLUSTER_TARBALLS[@]}" ;;
    image) shift; image_command "$@" ;;
    import) shift; import_images "$@" ;;
    *) die "usage: hack/images.sh build | tarballs | image NAME:TAG [options] | import TARBALL... (see its header)" ;;
  esac
}

main "$@"
