# Shared by the bench scripts: sourced after they set ROOT, never run on its own.

# The [notify] and [contacts] tables of a bench's scratch config: mail written as files into
# DIR (nothing leaves the machine) and the four contact groups the repository's playbooks
# name. Further [notify] lines (`update_interval = "15m"`) may follow DIR. Meant for an
# unquoted heredoc: $(bench_notify "$TMP/outbox").
bench_notify() {
    local dir=$1
    shift
    printf '[notify]\nto = ["duty"]\nfrom = "csirt@city.kitakami.example.jp"\ntransport = "file"\ndir = "%s"\n' "$dir"
    printf '%s\n' "$@"
    cat <<'EOF'

[contacts]
duty = ["csirt-duty@city.kitakami.example.jp"]
lead = ["johoseisaku-lead@city.kitakami.example.jp"]
tokatsu = ["tokatsu@city.kitakami.example.jp"]
ciso = ["ciso@city.kitakami.example.jp"]
EOF
}
