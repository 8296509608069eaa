// `ferry completion bash|zsh|fish`: shell completion scripts generated from the command tree itself, so that a new
// command or option completes without anyone remembering to edit a script. Each script is static text: the shell
// never runs ferry to complete a word.
import type { Command, Option } from 'commander';
import { FerryError } from '../core/errors.ts';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
export type Shell = (typeof SHELLS)[number];

interface OptionSpec {
  long: string;
  short?: string;
  /** Takes a value (`--to <host>`); its choices when commander knows them. */
  value: boolean;
  choices?: string[];
  description: string;
}

interface CommandSpec {
  /** Words after `ferry`: [] for the program, ['ca', 'issue'] for `ferry ca issue`. */
  path: string[];
  description: string;
  subcommands: { name: string; description: string }[];
  options: OptionSpec[];
}

function optionSpec(o: Option): OptionSpec {
  return {
    long: o.long!,
    ...(o.short ? { short: o.short } : {}),
    value: o.required || o.optional,
    ...(o.argChoices ? { choices: [...o.argChoices] } : {}),
    description: o.description,
  };
}

const HELP: OptionSpec = {
  long: '--help',
  short: '-h',
  value: false,
  description: 'display help for command',
};

/** Every command of the tree with what completes after it; the program's options are offered everywhere. */
export function commandSpecs(program: Command): CommandSpec[] {
  const globals = program.options.filter((o) => o.long !== '--version').map(optionSpec);
  const out: CommandSpec[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const own = path.length ? cmd.options.map(optionSpec) : program.options.map(optionSpec);
    out.push({
      path,
      description: cmd.description(),
      subcommands: cmd.commands.map((c) => ({ name: c.name(), description: c.description() })),
      options: [...own, ...(path.length ? globals : []), HELP],
    });
    for (const c of cmd.commands) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  return out;
}

/** Single-quoted for any of the three shells (none of them expands inside single quotes). */
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
/** A description on one short line. */
const brief = (s: string) => {
  const line = s.replace(/\s+/g, ' ').trim();
  const cut = line.search(/[:;(]/);
  const short = cut > 20 ? line.slice(0, cut).trim() : line;
  return short.length > 70 ? `${short.slice(0, 67)}...` : short;
};

function bash(specs: CommandSpec[]): string {
  const key = (s: CommandSpec) => q(s.path.join(' '));
  const cases = (f: (s: CommandSpec) => string[]) =>
    specs
      .map((s) => [key(s), f(s)] as const)
      .filter(([, words]) => words.length)
      .map(([k, words]) => `    ${k}) echo ${q(words.join(' '))} ;;`)
      .join('\n');
  const choices = specs
    .flatMap((s) =>
      s.options
        .filter((o) => o.choices)
        .map((o) => `    ${q(`${s.path.join(' ')} ${o.long}`)}) echo ${q(o.choices!.join(' '))} ;;`),
    )
    .join('\n');
  return `# ferry completion for bash: source it from ~/.bashrc, or save it as
# /usr/share/bash-completion/completions/ferry  (ferry completion bash > ...)
_ferry_subcommands() {
  case "$1" in
${cases((s) => s.subcommands.map((c) => c.name))}
  esac
}
_ferry_options() {
  case "$1" in
${cases((s) => s.options.flatMap((o) => [o.long, ...(o.short ? [o.short] : [])]))}
  esac
}
_ferry_valued() {
  case "$1" in
${cases((s) => s.options.filter((o) => o.value).flatMap((o) => [o.long, ...(o.short ? [o.short] : [])]))}
  esac
}
_ferry_choices() {
  case "$1" in
${choices}
  esac
}
_ferry() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} cmdpath= i w skip=
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ -n $skip ]]; then skip=; continue; fi
    [[ $w == -- ]] && { COMPREPLY=($(compgen -f -- "$cur")); return; }
    if [[ $w == -* ]]; then
      [[ " $(_ferry_valued "$cmdpath") " == *" $w "* ]] && skip=1
      continue
    fi
    if [[ " $(_ferry_subcommands "$cmdpath") " == *" $w "* ]]; then cmdpath=\${cmdpath:+$cmdpath }$w; fi
  done
  if [[ $prev == -* && " $(_ferry_valued "$cmdpath") " == *" $prev "* ]]; then
    local choices
    choices=$(_ferry_choices "$cmdpath $prev")
    if [[ -n $choices ]]; then COMPREPLY=($(compgen -W "$choices" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
    return
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(_ferry_options "$cmdpath")" -- "$cur"))
    return
  fi
  local subs
  subs=$(_ferry_subcommands "$cmdpath")
  if [[ -n $subs ]]; then COMPREPLY=($(compgen -W "$subs" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}
complete -o filenames -F _ferry ferry
`;
}

function zsh(specs: CommandSpec[]): string {
  const key = (s: CommandSpec) => q(s.path.join(' '));
  const lines = (f: (s: CommandSpec) => string[]) =>
    specs
      .map((s) => [key(s), f(s)] as const)
      .filter(([, words]) => words.length)
      .map(([k, words]) => `    ${k}) reply=(${words.join(' ')}) ;;`)
      .join('\n');
  const subcommands = lines((s) => s.subcommands.map((c) => q(`${c.name}:${brief(c.description)}`)));
  const options = lines((s) =>
    s.options.flatMap((o) =>
      [o.long, ...(o.short ? [o.short] : [])].map((f) => q(`${f}:${brief(o.description)}`)),
    ),
  );
  const valued = lines((s) =>
    s.options.filter((o) => o.value).flatMap((o) => [o.long, ...(o.short ? [o.short] : [])].map(q)),
  );
  const choices = specs
    .flatMap((s) =>
      s.options
        .filter((o) => o.choices)
        .map((o) => `    ${q(`${s.path.join(' ')} ${o.long}`)}) reply=(${o.choices!.map(q).join(' ')}) ;;`),
    )
    .join('\n');
  return `#compdef ferry
# ferry completion for zsh: save it as _ferry in a directory of $fpath (ferry completion zsh > .../_ferry),
# or source it after compinit
_ferry_subcommands() {
  reply=()
  case "$1" in
${subcommands}
  esac
}
_ferry_options() {
  reply=()
  case "$1" in
${options}
  esac
}
_ferry_valued() {
  reply=()
  case "$1" in
${valued}
  esac
}
_ferry_choices() {
  reply=()
  case "$1" in
${choices}
  esac
}
_ferry() {
  local cmdpath= i w skip= cur=\${words[CURRENT]} prev=\${words[CURRENT-1]}
  local -a reply names
  for ((i = 2; i < CURRENT; i++)); do
    w=\${words[i]}
    if [[ -n $skip ]]; then skip=; continue; fi
    [[ $w == -- ]] && { _files; return; }
    if [[ $w == -* ]]; then
      _ferry_valued "$cmdpath"
      (( \${reply[(Ie)$w]} )) && skip=1
      continue
    fi
    _ferry_subcommands "$cmdpath"
    names=(\${reply%%:*})
    (( \${names[(Ie)$w]} )) && cmdpath=\${cmdpath:+$cmdpath }$w
  done
  _ferry_valued "$cmdpath"
  if [[ $prev == -* ]] && (( \${reply[(Ie)$prev]} )); then
    _ferry_choices "$cmdpath $prev"
    if (( \${#reply} )); then compadd -a reply; else _files; fi
    return
  fi
  if [[ $cur == -* ]]; then
    _ferry_options "$cmdpath"
    _describe -t options option reply
    return
  fi
  _ferry_subcommands "$cmdpath"
  if (( \${#reply} )); then _describe -t commands command reply; else _files; fi
}
if [[ $funcstack[1] == _ferry ]]; then
  _ferry "$@"
else
  compdef _ferry ferry
fi
`;
}

function fish(specs: CommandSpec[]): string {
  const out = [
    '# ferry completion for fish: save it as ~/.config/fish/completions/ferry.fish',
    '# (ferry completion fish > ~/.config/fish/completions/ferry.fish)',
    'complete -c ferry -f',
  ];
  // "the words so far lead to exactly this command": fish's own test, written out per command
  const after = (path: string[]) => {
    const siblings = (p: string[]) => specs.find((s) => s.path.join(' ') === p.join(' '))!.subcommands;
    const conds: string[] = [];
    for (let i = 0; i < path.length; i++) {
      conds.push(`__fish_seen_subcommand_from ${path[i]}`);
    }
    const here = siblings(path).map((c) => c.name);
    if (here.length) conds.push(`not __fish_seen_subcommand_from ${here.join(' ')}`);
    if (!path.length) return here.length ? `not __fish_seen_subcommand_from ${here.join(' ')}` : '';
    return conds.join('; and ');
  };
  for (const s of specs) {
    const cond = after(s.path);
    const n = cond ? ` -n ${q(cond)}` : '';
    for (const c of s.subcommands)
      out.push(`complete -c ferry${n} -a ${q(c.name)} -d ${q(brief(c.description))}`);
    for (const o of s.options) {
      const flags = `-l ${o.long.slice(2)}${o.short ? ` -s ${o.short.slice(1)}` : ''}`;
      const value = o.choices ? ` -x -a ${q(o.choices.join(' '))}` : o.value ? ' -r -F' : '';
      out.push(`complete -c ferry${n} ${flags}${value} -d ${q(brief(o.description))}`);
    }
  }
  return `${out.join('\n')}\n`;
}

export function completionScript(program: Command, shell: string): string {
  const specs = commandSpecs(program);
  if (shell === 'bash') return bash(specs);
  if (shell === 'zsh') return zsh(specs);
  if (shell === 'fish') return fish(specs);
  throw new FerryError('FERRY_E_INPUT_ARGS', `no completion for shell ${shell}: use ${SHELLS.join(', ')}`, {
    phase: 'input',
  });
}
