// The controller's systemd unit, as `ferry install --controller` writes it. The controller only speaks HTTPS (to
// agents, users and etcd) and writes its store: it runs without capabilities, in a read-only system, with
// systemd's service syscall set.
import { VERSION } from '../core/version.ts';
import { FERRY_SERVICE_BASICS, FERRY_UNIT_BASICS } from '../runtime/systemd.ts';

export const CONTROLLER_UNIT = 'ferry-controller.service';

export function controllerUnitText(o: { ferry: string; config: string }): string {
  return [
    `# ferry controller, written by \`ferry install --controller\` (ferry ${VERSION}); docs/install.md`,
    '[Unit]',
    'Description=ferry controller: cluster state, heartbeats, rebalancing',
    ...FERRY_UNIT_BASICS,
    '',
    '[Service]',
    ...FERRY_SERVICE_BASICS,
    `ExecStart=${o.ferry} controller --config ${o.config}`,
    'SyslogIdentifier=ferry-controller',
    'StateDirectory=ferry/controller',
    'StateDirectoryMode=0700',
    'UMask=0077',
    // root for reading its key (0600), but without any capability
    'CapabilityBoundingSet=',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'ProtectProc=invisible',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'SystemCallArchitectures=native',
    'SystemCallFilter=@system-service',
    // a call outside the set fails (libuv falls back) instead of killing the controller
    'SystemCallErrorNumber=EPERM',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}
