"""Parser for Go ``text/template`` source (the syntax half of :mod:`.gotemplate`).

The grammar follows Go's ``text/template/parse`` package: text and ``{{ }}`` actions, pipelines with
``|``, parenthesised pipelines, variables with ``:=`` / ``=``, and the control actions ``if``/``else
if``/``with``/``else with``/``range``/``break``/``continue``/``define``/``template``/``block``. Like
Go, the parser rejects undefined variables and unknown functions, so a broken template fails when it
is loaded rather than halfway through a request. Tokens come from :mod:`.gotemplate_lex`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from .gotemplate_lex import Lexer, TemplateError, Token, error_at, number_value

# ---------------------------------------------------------------------------------------------
# Nodes. Frozen, so a parsed template can be shared between threads and cached.


@dataclass(frozen=True, slots=True)
class Node:
    pos: int


@dataclass(frozen=True, slots=True)
class TextNode(Node):
    text: str


@dataclass(frozen=True, slots=True)
class FieldNode(Node):
    idents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VariableNode(Node):
    name: str  # "$" or "$x"
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChainNode(Node):
    node: Node
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IdentifierNode(Node):
    name: str


@dataclass(frozen=True, slots=True)
class DotNode(Node):
    pass


@dataclass(frozen=True, slots=True)
class NilNode(Node):
    pass


@dataclass(frozen=True, slots=True)
class BoolNode(Node):
    value: bool


@dataclass(frozen=True, slots=True)
class NumberNode(Node):
    value: int | float
    text: str


@dataclass(frozen=True, slots=True)
class StringNode(Node):
    value: str


@dataclass(frozen=True, slots=True)
class CommandNode(Node):
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class PipeNode(Node):
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[CommandNode, ...]


@dataclass(frozen=True, slots=True)
class ListNode(Node):
    nodes: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class ActionNode(Node):
    pipe: PipeNode


@dataclass(frozen=True, slots=True)
class BranchNode(Node):
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None


class IfNode(BranchNode):
    __slots__ = ()


class WithNode(BranchNode):
    __slots__ = ()


class RangeNode(BranchNode):
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class BreakNode(Node):
    pass


@dataclass(frozen=True, slots=True)
class ContinueNode(Node):
    pass


@dataclass(frozen=True, slots=True)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None


@dataclass(frozen=True, slots=True)
class _EndMarker(Node):
    pass


@dataclass(frozen=True, slots=True)
class _ElseMarker(Node):
    chained: bool  # "else if" / "else with": the keyword is left for the enclosing control


# ---------------------------------------------------------------------------------------------
# Parser

_OPERAND_START = frozenset(
    {"BOOL", "CHAR", "DOT", "FIELD", "IDENT", "NUMBER", "NIL", "STRING", "VARIABLE", "LPAREN"}
)
_LITERAL_NODES = (BoolNode, DotNode, NilNode, NumberNode, StringNode)


@dataclass(frozen=True, slots=True)
class ParsedTemplate:
    root: ListNode
    defines: dict[str, ListNode]


class Parser:
    """Recursive-descent parser over the lexer's tokens, mirroring Go's parse.Tree."""

    def __init__(self, source: str, functions: Collection[str]) -> None:
        self.src = source
        self.functions = functions
        self.tokens = Lexer(source).run()
        self.index = 0
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.defines: dict[str, ListNode] = {}

    def parse(self) -> ParsedTemplate:
        nodes: list[Node] = []
        while self._peek().kind != "EOF":
            if self._at_define():
                self._parse_define()
                continue
            node = self._text_or_action()
            if isinstance(node, _EndMarker | _ElseMarker):
                raise self._fail(node.pos, f"unexpected {{{{{self._marker_name(node)}}}}}")
            nodes.append(node)
        return ParsedTemplate(ListNode(0, tuple(nodes)), self.defines)

    # token helpers ---------------------------------------------------------------------------

    def _fail(self, pos: int, message: str) -> TemplateError:
        return error_at(self.src, pos, message)

    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "EOF":
            self.index += 1
        return token

    def _next_non_space(self) -> Token:
        token = self._next()
        while token.kind == "SPACE":
            token = self._next()
        return token

    def _peek_non_space(self) -> Token:
        while self.tokens[self.index].kind == "SPACE":
            self.index += 1
        return self.tokens[self.index]

    def _backup(self) -> None:
        self.index -= 1

    def _expect(self, kind: str, context: str) -> Token:
        token = self._next_non_space()
        if token.kind != kind:
            raise self._unexpected(token, context)
        return token

    def _unexpected(self, token: Token, context: str) -> TemplateError:
        shown = "EOF" if token.kind == "EOF" else repr(token.value)
        return self._fail(token.pos, f"unexpected {shown} in {context}")

    @staticmethod
    def _marker_name(node: Node) -> str:
        return "end" if isinstance(node, _EndMarker) else "else"

    # lists and actions -----------------------------------------------------------------------

    def _at_define(self) -> bool:
        if self._peek().kind != "LEFT":
            return False
        after = self.index + 1
        while self.tokens[after].kind == "SPACE":
            after += 1
        token = self.tokens[after]
        return token.kind == "KEYWORD" and token.value == "define"

    def _parse_define(self) -> None:
        self._next()  # LEFT
        self._next_non_space()  # define
        name = self._template_name("define clause")
        self._expect("RIGHT", "define clause")
        saved_vars, saved_depth = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self._item_list()
        if not isinstance(end, _EndMarker):
            raise self._fail(end.pos, "unexpected {{else}} in define clause")
        self.vars, self.range_depth = saved_vars, saved_depth
        self.defines[name] = body

    def _item_list(self) -> tuple[ListNode, Node]:
        nodes: list[Node] = []
        start = self._peek().pos
        while True:
            if self._peek().kind == "EOF":
                raise self._fail(self._peek().pos, "unexpected EOF")
            node = self._text_or_action()
            if isinstance(node, _EndMarker | _ElseMarker):
                return ListNode(start, tuple(nodes)), node
            nodes.append(node)

    def _text_or_action(self) -> Node:
        token = self._next_non_space()
        if token.kind == "TEXT":
            return TextNode(token.pos, token.value)
        if token.kind == "LEFT":
            return self._action()
        raise self._unexpected(token, "input")

    def _action(self) -> Node:
        token = self._next_non_space()
        if token.kind == "KEYWORD":
            handler = {
                "block": self._block_control,
                "break": self._break_control,
                "continue": self._continue_control,
                "else": self._else_control,
                "end": self._end_control,
                "if": self._if_control,
                "range": self._range_control,
                "template": self._template_control,
                "with": self._with_control,
            }.get(token.value)
            if handler is None:
                raise self._fail(token.pos, f"unexpected {{{{{token.value}}}}} here")
            return handler(token)
        self._backup()
        pipe = self._pipeline("command", "RIGHT")
        return ActionNode(token.pos, pipe)

    def _end_control(self, token: Token) -> Node:
        self._expect("RIGHT", "end")
        return _EndMarker(token.pos)

    def _else_control(self, token: Token) -> Node:
        peek = self._peek_non_space()
        if peek.kind == "KEYWORD" and peek.value in ("if", "with"):
            return _ElseMarker(token.pos, chained=True)
        self._expect("RIGHT", "else")
        return _ElseMarker(token.pos, chained=False)

    def _loop_control(self, token: Token) -> None:
        self._expect("RIGHT", token.value)
        if self.range_depth == 0:
            raise self._fail(token.pos, f"{{{{{token.value}}}}} outside {{{{range}}}}")

    def _break_control(self, token: Token) -> Node:
        self._loop_control(token)
        return BreakNode(token.pos)

    def _continue_control(self, token: Token) -> Node:
        self._loop_control(token)
        return ContinueNode(token.pos)

    def _if_control(self, token: Token) -> Node:
        return IfNode(token.pos, *self._parse_control("if"))

    def _with_control(self, token: Token) -> Node:
        return WithNode(token.pos, *self._parse_control("with"))

    def _range_control(self, token: Token) -> Node:
        return RangeNode(token.pos, *self._parse_control("range"))

    def _parse_control(self, context: str) -> tuple[PipeNode, ListNode, ListNode | None]:
        mark = len(self.vars)  # variables declared here go out of scope at {{end}}
        pipe = self._pipeline(context, "RIGHT")
        if context == "range":
            self.range_depth += 1
        body, terminator = self._item_list()
        if context == "range":
            self.range_depth -= 1
        else_body: ListNode | None = None
        if isinstance(terminator, _ElseMarker):
            else_body = self._else_body(context, terminator)
        del self.vars[mark:]
        return pipe, body, else_body

    def _else_body(self, context: str, marker: _ElseMarker) -> ListNode:
        # "{{else if x}}" is "{{else}}{{if x}}...{{end}}{{end}}" with the outer {{end}} implied.
        keyword = self._peek_non_space()
        if marker.chained and keyword.value == context and context in ("if", "with"):
            self._next_non_space()
            nested = self._if_control(keyword) if context == "if" else self._with_control(keyword)
            return ListNode(marker.pos, (nested,))
        if marker.chained:
            raise self._unexpected(keyword, f"{{{{else}}}} of {context}")
        body, terminator = self._item_list()
        if not isinstance(terminator, _EndMarker):
            raise self._fail(terminator.pos, "expected end; found {{else}}")
        return body

    def _template_name(self, context: str) -> str:
        token = self._next_non_space()
        if token.kind != "STRING":
            raise self._unexpected(token, context)
        return token.value

    def _template_control(self, token: Token) -> Node:
        name = self._template_name("template clause")
        pipe = None
        if self._peek_non_space().kind != "RIGHT":
            pipe = self._pipeline("template clause", "RIGHT")
        else:
            self._next_non_space()
        return TemplateNode(token.pos, name, pipe)

    def _block_control(self, token: Token) -> Node:
        name = self._template_name("block clause")
        pipe = self._pipeline("block clause", "RIGHT")
        saved_vars, saved_depth = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self._item_list()
        self.vars, self.range_depth = saved_vars, saved_depth
        if not isinstance(end, _EndMarker):
            raise self._fail(end.pos, "unexpected {{else}} in block clause")
        self.defines[name] = body
        return TemplateNode(token.pos, name, pipe)

    # pipelines -------------------------------------------------------------------------------

    def _declarations(self, context: str) -> tuple[list[str], bool]:
        decl: list[str] = []
        while (token := self._peek_non_space()).kind == "VARIABLE":
            variable_index = self.index
            self._next()
            after = self._peek_non_space()
            if after.kind in ("DECLARE", "ASSIGN"):
                self._next_non_space()
                is_assign = after.kind == "ASSIGN"
                if is_assign:
                    self._use_var(token)
                else:
                    self.vars.append(token.value)
                decl.append(token.value)
                return decl, is_assign
            if after.kind == "COMMA":
                if decl or context != "range":
                    raise self._fail(after.pos, f"too many declarations in {context}")
                self._next_non_space()
                decl.append(token.value)
                self.vars.append(token.value)
                if self._peek_non_space().kind != "VARIABLE":
                    raise self._fail(after.pos, "range can only initialize variables")
                continue
            if decl:
                raise self._fail(after.pos, f"missing := after variables in {context}")
            self.index = variable_index  # not a declaration: the variable is the first operand
            break
        return decl, False

    def _pipeline(self, context: str, end: str) -> PipeNode:
        start = self._peek_non_space().pos
        decl, is_assign = self._declarations(context)
        cmds: list[CommandNode] = []
        while True:
            token = self._next_non_space()
            if token.kind == end:
                break
            if token.kind in _OPERAND_START:
                self._backup()
                cmds.append(self._command())
                continue
            raise self._unexpected(token, context)
        if not cmds:
            raise self._fail(start, f"missing value for {context}")
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _LITERAL_NODES):
                raise self._fail(cmd.pos, f"non executable command in pipeline stage {stage}")
        return PipeNode(start, tuple(decl), is_assign, tuple(cmds))

    def _command(self) -> CommandNode:
        args: list[Node] = []
        start = self._peek_non_space().pos
        while True:
            self._peek_non_space()
            operand = self._operand()
            if operand is not None:
                args.append(operand)
            token = self._next()
            if token.kind == "SPACE":
                continue
            if token.kind in ("RIGHT", "RPAREN"):
                self._backup()
            elif token.kind != "PIPE":
                raise self._unexpected(token, "operand")
            break
        if not args:
            raise self._fail(start, "empty command")
        return CommandNode(start, tuple(args))

    def _operand(self) -> Node | None:
        node = self._term()
        if node is None or self._peek().kind != "FIELD":
            return node
        fields: list[str] = []
        while self._peek().kind == "FIELD":
            fields.append(self._next().value[1:])
        if isinstance(node, FieldNode):
            return FieldNode(node.pos, node.idents + tuple(fields))
        if isinstance(node, VariableNode):
            return VariableNode(node.pos, node.name, node.fields + tuple(fields))
        if isinstance(node, _LITERAL_NODES):
            raise self._fail(node.pos, "unexpected . after term")
        return ChainNode(node.pos, node, tuple(fields))

    def _use_var(self, token: Token) -> None:
        if token.value not in self.vars:
            raise self._fail(token.pos, f'undefined variable "{token.value}"')

    def _term(self) -> Node | None:
        token = self._next_non_space()
        kind, pos, value = token.kind, token.pos, token.value
        if kind == "IDENT":
            if value not in self.functions:
                raise self._fail(pos, f'function "{value}" not defined')
            return IdentifierNode(pos, value)
        if kind == "DOT":
            return DotNode(pos)
        if kind == "NIL":
            return NilNode(pos)
        if kind == "VARIABLE":
            self._use_var(token)
            return VariableNode(pos, value)
        if kind == "FIELD":
            return FieldNode(pos, (value[1:],))
        if kind == "BOOL":
            return BoolNode(pos, value == "true")
        if kind == "CHAR":
            return NumberNode(pos, ord(value), value)
        if kind == "NUMBER":
            try:
                return NumberNode(pos, number_value(value), value)
            except ValueError as exc:
                raise self._fail(pos, f"{exc}: {value}") from None
        if kind == "STRING":
            return StringNode(pos, value)
        if kind == "LPAREN":
            return self._pipeline("parenthesized pipeline", "RPAREN")
        self._backup()
        return None
