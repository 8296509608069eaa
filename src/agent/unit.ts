// The agent's systemd unit, as `ferry install --agent` writes it. Its hardening is limited to what leaves runc and
// CRIU working: both need root with nearly every capability and the agent's own mount namespace (containers and
// their mounts are made inside it, CRIU reads and restores them), and no seccomp filter may sit on the agent
// (containers would inherit it, CRIU would dump it as theirs). So: no Protect*/Private* namespace options and no
// SystemCallFilter; a smaller capability bounding set, a protected OOM score, state kept across restarts.
import { VERSION } from '../core/version.ts';
import { FERRY_SERVICE_BASICS, FERRY_UNIT_BASICS } from '../runtime/systemd.ts';

export const AGENT_UNIT = 'ferry-agent.service';

/**
 * Capabilities neither runc nor CRIU needs, dropped from the agent's bounding set (so no container of this host
 * can have them either): loading modules, rebooting, raw I/O, MAC policy, the clock, the kernel log, wake alarms.
 */
export const AGENT_DROPPED_CAPABILITIES = [
  'CAP_SYS_MODULE',
  'CAP_SYS_BOOT',
  'CAP_SYS_RAWIO',
  'CAP_MAC_ADMIN',
  'CAP_MAC_OVERRIDE',
  'CAP_SYS_TIME',
  'CAP_SYSLOG',
  'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND',
];

export function agentUnitText(o: { ferry: string; config: string }): string {
  return [
    `# ferry agent, written by \`ferry install --agent\` (ferry ${VERSION}); docs/install.md`,
    '[Unit]',
    'Description=ferry agent: live migration of runc containers with CRIU',
    ...FERRY_UNIT_BASICS,
    '',
    '[Service]',
    ...FERRY_SERVICE_BASICS,
    `ExecStart=${o.ferry} agent --config ${o.config}`,
    // the containers it started, and the CRIU of a migration under way, outlive a restart of the agent: the
    // restarted agent finds and settles them (its journal), so only the agent itself is stopped
    'KillMode=process',
    'TimeoutStopSec=30',
    // JSON log lines on stderr: journald keeps them (journalctl -u ferry-agent -o cat)
    'SyslogIdentifier=ferry-agent',
    'StateDirectory=ferry/agent',
    'StateDirectoryMode=0700',
    // /run/ferry/images holds the images of a migration under way: kept across restarts
    'RuntimeDirectory=ferry',
    'RuntimeDirectoryMode=0700',
    'RuntimeDirectoryPreserve=yes',
    'LimitNOFILE=1048576',
    // under memory pressure the kernel should take a container before the agent that can move it
    'OOMScoreAdjust=-500',
    `CapabilityBoundingSet=~${AGENT_DROPPED_CAPABILITIES.join(' ')}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
