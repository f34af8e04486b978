# A pvh guest as a Nomad job: the raw_exec driver runs `pvh create -F` on the
# client Nomad places it on, and Nomad restarts or reschedules it as it
# would any service. The client needs pvh at /usr/local/bin/pvh, /dev/kvm,
# and raw_exec enabled (client config: plugin "raw_exec" { config { enabled = true } });
# raw_exec runs tasks as the Nomad client's user (root on most clients), so
# TAP and bridge interfaces work; user networking (passt) needs no root.
#   nomad job run contrib/nomad/pvh-guest.nomad.hcl
job "pvh-web" {
  datacenters = ["dc1"]
  type        = "service"

  # Only clients that can run PVH guests: Linux with KVM. Mark them in the
  # client config with meta { pvh = "true" } once pvh and /dev/kvm are there.
  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }
  constraint {
    attribute = "${meta.pvh}"
    value     = "true"
  }

  group "web" {
    count = 1

    # The guest's disk lives on the client: keep the guest where its disk is.
    # (Moving a running guest between clients is live migration, not yet.)
    ephemeral_disk {
      sticky  = true
      migrate = false
      size    = 300
    }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "fail"
    }

    task "guest" {
      driver = "raw_exec"

      config {
        command = "/usr/local/bin/pvh"
        args    = ["create", "-F", "--log-file", "${NOMAD_ALLOC_DIR}/logs/pvh-web.log", "${NOMAD_TASK_DIR}/web.cfg"]
      }

      # The xl config, written by Nomad into the task directory (README: xl configs).
      template {
        destination = "local/web.cfg"
        data        = <<EOT
type    = "pvh"
name    = "web-{{ env "NOMAD_ALLOC_INDEX" }}"
kernel  = "/srv/pvh/vmlinuz"
ramdisk = "/srv/pvh/initrd.img"
extra   = "console=hvc0 root=/dev/xvda"
memory  = 512
vcpus   = 2
disk    = [ '/srv/pvh/web.img,raw,xvda,rw' ]
vif     = [ '' ]
on_reboot = "restart"
EOT
      }

      # SIGTERM stops the guest (pvh exits 130); kill_timeout bounds it.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      # What the guest takes from the client: its memory (plus the VMM's
      # own, about 64 MiB) and its vCPUs in MHz.
      resources {
        cpu    = 2000
        memory = 600
      }
    }
  }
}
