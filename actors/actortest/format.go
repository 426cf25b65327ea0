package actortest

import (
	"fmt"
	"slices"
	"strings"
	"unicode"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Format renders a message on one line, fields in declaration order, unset
// fields left out. prototext is not used on purpose: its output is
// deliberately unstable, and transcripts must be byte-for-byte reproducible.
// Epochs print as term:node, snapshots and specs by name.
func Format(msg proto.Message) string {
	r := msg.ProtoReflect()
	name := string(r.Descriptor().Name())
	if f := fields(r, true); f != "" {
		return name + " " + f
	}
	return name
}

func fields(r protoreflect.Message, top bool) string {
	var parts []string
	fds := r.Descriptor().Fields()
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if !r.Has(fd) || (top && fd.Name() == "site") {
			continue
		}
		parts = append(parts, string(fd.Name())+"="+value(fd, r.Get(fd)))
	}
	return strings.Join(parts, " ")
}

func value(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch {
	case fd.IsList():
		l := v.List()
		items := make([]string, l.Len())
		for i := range items {
			items[i] = scalar(fd, l.Get(i))
		}
		return "[" + strings.Join(items, ",") + "]"
	case fd.IsMap():
		var items []string
		v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			items = append(items, k.String()+":"+scalar(fd.MapValue(), v))
			return true
		})
		slices.Sort(items)
		return "{" + strings.Join(items, ",") + "}"
	}
	return scalar(fd, v)
}

func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		return enumName(fd.Enum(), v.Enum())
	case protoreflect.MessageKind:
		switch x := v.Message().Interface().(type) {
		case *m.Epoch:
			return core.EpochString(x)
		case *m.SnapshotRef:
			return x.GetName()
		case *m.SiteSpec:
			return x.GetName()
		}
		return "{" + fields(v.Message(), false) + "}"
	case protoreflect.StringKind:
		return quote(v.String())
	case protoreflect.Int64Kind:
		if strings.HasSuffix(string(fd.Name()), "_ms") && v.Int() >= Origin.UnixMilli() {
			// Host clock readings print relative to the harness origin.
			return fmt.Sprintf("+%dms", v.Int()-Origin.UnixMilli())
		}
	}
	return v.String()
}

// enumName strips the type prefix: SITE_PHASE_ACTIVE prints as ACTIVE.
func enumName(ed protoreflect.EnumDescriptor, n protoreflect.EnumNumber) string {
	ev := ed.Values().ByNumber(n)
	if ev == nil {
		return fmt.Sprint(n)
	}
	return strings.TrimPrefix(string(ev.Name()), upperSnake(string(ed.Name()))+"_")
}

func upperSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && unicode.IsUpper(r) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func quote(s string) string {
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// formatAttrs renders slog-style key/value pairs, leaving out the keys that
// only repeat the actor's own address.
func formatAttrs(self core.Address, attrs []any) string {
	var parts []string
	for i := 0; i+1 < len(attrs); i += 2 {
		k := fmt.Sprint(attrs[i])
		v := fmt.Sprint(attrs[i+1])
		if (k == "site" && v == self.Site) || (k == "node" && v == self.Node) {
			continue
		}
		parts = append(parts, k+"="+quote(v))
	}
	return strings.Join(parts, " ")
}

// formatView renders an AdminView on several lines: the view (snapshots by
// name), then one indented line per node report and one for the dataset info.
func formatView(v *m.AdminView) string {
	top := proto.CloneOf(v)
	top.Reports, top.Info = nil, nil
	lines := []string{Format(top)}
	for _, r := range v.Reports {
		lines = append(lines, "      report "+fields(r.ProtoReflect(), false))
	}
	if v.Info != nil {
		lines = append(lines, "      info "+fields(v.Info.ProtoReflect(), false))
	}
	return strings.Join(lines, "\n")
}
