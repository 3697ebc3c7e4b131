"""Shell completion, generated from the argparse parser itself. Pure: no I/O.

One engine answers every shell: the scripts that ``externalauth completion bash|zsh|fish``
prints are a few lines that run ``externalauth __complete WORD... CURRENT`` and show what
it prints, in the format kubectl and other cobra programs use (one ``value<TAB>help`` per
line, then ``:DIRECTIVE``). kubectl itself runs ``kubectl_complete-externalauth`` the same
way for ``kubectl externalauth <TAB>``. Names that live in the cluster (providers, links,
namespaces) are asked for by :class:`Need`; the caller looks them up.

No dependency (argcomplete, shtab) is needed: the parser is small, and walking it here keeps
completion in step with it (a new flag completes without anyone touching a script).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
from collections.abc import Iterable, Sequence

#: cobra's ShellCompDirective bits, which kubectl relays for plugins.
NO_FILES = 4


class Need(enum.StrEnum):
    """A value only the cluster (or the file system) knows."""

    NONE = "none"
    FILE = "file"
    PROVIDER = "provider"
    LINK = "link"
    NAMESPACE = "namespace"


# What a value is, by the argparse ``dest`` that holds it.
_NEEDS = {
    "kubeconfig": Need.FILE,
    "provider": Need.PROVIDER,
    "link": Need.LINK,
    "namespace": Need.NAMESPACE,
    "namespaces": Need.NAMESPACE,
}


@dataclasses.dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]
    help: str
    takes_value: bool
    choices: tuple[str, ...] = ()
    need: Need = Need.NONE
    repeatable: bool = False


@dataclasses.dataclass(frozen=True)
class Positional:
    name: str
    choices: tuple[str, ...] = ()
    need: Need = Need.NONE


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    flags: tuple[Flag, ...]
    positionals: tuple[Positional, ...]


@dataclasses.dataclass(frozen=True)
class Tree:
    flags: tuple[Flag, ...]
    commands: tuple[Command, ...]

    def command(self, name: str) -> Command | None:
        return next((c for c in self.commands if c.name == name), None)


@dataclasses.dataclass(frozen=True)
class Answer:
    """Candidates (value, help) that start with the word being completed; ``need`` asks the
    caller for more (names from the cluster, or files)."""

    candidates: tuple[tuple[str, str], ...] = ()
    need: Need = Need.NONE
    prefix: str = ""  # the word being completed, to filter what ``need`` finds

    @property
    def directive(self) -> int:
        return 0 if self.need is Need.FILE else NO_FILES


def _first_line(text: str | None) -> str:
    """A help text shortened for a completion menu: one line, no parenthesised details."""
    if not text or text == argparse.SUPPRESS:
        return ""
    return " ".join(text.split(" (")[0].split())[:80]


def _flag(action: argparse.Action) -> Flag:
    return Flag(
        names=tuple(action.option_strings),
        help=_first_line(action.help),
        takes_value=action.nargs != 0,
        choices=tuple(str(c) for c in action.choices or ()),
        need=_NEEDS.get(action.dest, Need.NONE),
        repeatable=isinstance(action, argparse._AppendAction),
    )


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def tree(parser: argparse.ArgumentParser) -> Tree:
    """The completion model of ``parser`` and its subcommands (hidden ones left out)."""
    def flags(p: argparse.ArgumentParser) -> tuple[Flag, ...]:
        return tuple(_flag(a) for a in p._actions if a.option_strings and a.help != argparse.SUPPRESS)

    commands = []
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for name, child in sub.choices.items():
            positionals = tuple(
                Positional(name=a.dest, choices=tuple(str(c) for c in a.choices or ()),
                           need=_NEEDS.get(a.dest, Need.NONE))
                for a in child._actions if not a.option_strings and a.help != argparse.SUPPRESS)
            commands.append(Command(name, _first_line(helps.get(name)), flags(child), positionals))
    return Tree(flags(parser), tuple(commands))


def _lookup(flags: Iterable[Flag], word: str) -> Flag | None:
    return next((f for f in flags if word in f.names), None)


def _matching(values: Iterable[tuple[str, str]], prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((v, h) for v, h in values if v.startswith(prefix))


def complete(model: Tree, words: Sequence[str], current: str) -> Answer:
    """What may come at ``current``, the word under the cursor, after ``words`` (the
    command line after the program name, up to that word)."""
    command: Command | None = None
    pending: Flag | None = None
    used: set[str] = set()
    position = 0
    only_positionals = False
    for word in words:
        flags = command.flags if command else model.flags
        if pending is not None:
            pending = None
        elif word == "--":
            only_positionals = True
        elif word.startswith("-") and word != "-" and not only_positionals:
            name = word.split("=", 1)[0]
            flag = _lookup(flags, name)
            if flag is not None:
                used.update(flag.names)
                if flag.takes_value and "=" not in word:
                    pending = flag
        elif command is None:
            command = model.command(word)
            if command is None:
                return Answer()
        else:
            position += 1
    flags = command.flags if command else model.flags  # argparse takes top-level flags before the command only
    if pending is not None:
        return _values(pending.choices, pending.need, current)
    if current.startswith("-") and not only_positionals:
        offered = [(n, f.help) for f in flags if f.repeatable or not (set(f.names) & used) for n in f.names
                   if n.startswith("--") or len(f.names) == 1]
        return Answer(_matching(offered, current))
    if command is None:
        return Answer(_matching(((c.name, c.help) for c in model.commands), current))
    if position < len(command.positionals):
        slot = command.positionals[position]
        return _values(slot.choices, slot.need, current)
    return Answer()


def _values(choices: Sequence[str], need: Need, current: str) -> Answer:
    if choices:
        return Answer(_matching(((c, "") for c in choices), current))
    return Answer(need=need, prefix=current)


def render(answer: Answer, found: Iterable[str] = ()) -> str:
    """The cobra-style answer: one ``value<TAB>help`` (or ``value``) per line, ``:directive`` last.
    ``found`` are the names the caller looked up for ``answer.need``."""
    lines = [f"{v}\t{h}" if h else v for v, h in answer.candidates]
    lines += [name for name in found if name.startswith(answer.prefix)]
    return "\n".join([*lines, f":{answer.directive}"]) + "\n"


# --- the scripts -----------------------------------------------------------------------------
SHELLS = ("bash", "zsh", "fish")

_BASH = r"""# bash completion for {prog}; load with:  source <({prog} completion bash)
_{fn}_complete() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" out line directive
    out=$("${{COMP_WORDS[0]}}" __complete "${{COMP_WORDS[@]:1:COMP_CWORD-1}}" "$cur" 2>/dev/null) || return
    directive=${{out##*:}}
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -z $line || $line == :* ]] && continue
        COMPREPLY+=("${{line%%$'\t'*}}")
    done <<< "$out"
    if (( ${{#COMPREPLY[@]}} == 0 && (directive & 4) == 0 )); then
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
}}
complete -o bashdefault -F _{fn}_complete {prog}
"""

_ZSH = r"""#compdef {prog}
# zsh completion for {prog}; load with:  source <({prog} completion zsh)
_{fn}_complete() {{
    local -a lines candidates
    local out directive line
    out=$("${{words[1]}}" __complete "${{(@)words[2,CURRENT-1]}}" "${{words[CURRENT]}}" 2>/dev/null) || return 1
    lines=("${{(@f)out}}")
    directive=${{lines[-1]#:}}
    for line in "${{(@)lines[1,-2]}}"; do
        [[ -z $line ]] && continue
        if [[ $line == *$'\t'* ]]; then
            candidates+=("${{${{line%%$'\t'*}}//:/\\:}}:${{line#*$'\t'}}")
        else
            candidates+=("${{line//:/\\:}}")
        fi
    done
    if (( ${{#candidates}} )); then
        _describe '{prog}' candidates
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}}
if (( $+functions[compdef] )); then compdef _{fn}_complete {prog}; fi
"""

_FISH = r"""# fish completion for {prog}; load with:  {prog} completion fish | source
function __{fn}_complete
    set -l words (commandline -opc)
    set -l out ($words[1] __complete $words[2..-1] (commandline -ct) 2>/dev/null)
    or return
    set -l directive (string replace ':' '' -- $out[-1])
    set -e out[-1]
    if test (count $out) -eq 0; and test (math "bitand($directive, 4)") -eq 0
        __fish_complete_path (commandline -ct)
        return
    end
    printf '%s\n' $out
end
complete -c {prog} -f -a '(__{fn}_complete)'
"""


def script(shell: str, *, prog: str = "externalauth") -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    template = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}[shell]
    return template.format(prog=prog, fn=prog.replace("-", "_"))
