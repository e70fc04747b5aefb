namespace Klf.Training;

/// <summary>Which tokens of a prompt that does not fit are dropped.</summary>
public enum PromptTruncation
{
    /// <summary>
    /// Drop the middle: keep the first ⌊room/2⌋ tokens (BOS, the instruction and the option list of
    /// a classification prompt) and the last ⌈room/2⌉ (the text closest to the answer and the
    /// "Answer:" cue). The default: cutting either end loses what tells the model which task it is
    /// doing or where the answer starts.
    /// </summary>
    DropMiddle = 0,

    /// <summary>Drop the beginning: keep the last <c>room</c> tokens (the text closest to the answer).</summary>
    DropStart = 1,
}

/// <summary>Cutting prompt ids to a budget, the same way for training, loss evaluation and generation.</summary>
public static class PromptCut
{
    /// <summary>
    /// The prompt cut to at most <paramref name="room"/> tokens by <paramref name="mode"/>; the
    /// array itself when it fits (room ≤ 0 keeps nothing). Pure; never modifies its input.
    /// </summary>
    public static int[] Apply(int[] ids, int room, PromptTruncation mode)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Length <= room) return ids;
        if (room <= 0) return Array.Empty<int>();
        switch (mode)
        {
            case PromptTruncation.DropStart:
                return ids[(ids.Length - room)..];
            case PromptTruncation.DropMiddle:
                var head = room / 2;
                var tail = room - head;
                var cut = new int[room];
                Array.Copy(ids, 0, cut, 0, head);
                Array.Copy(ids, ids.Length - tail, cut, head, tail);
                return cut;
            default:
                throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown prompt truncation");
        }
    }

    /// <summary>Parses "middle" / "drop-middle" or "start" / "drop-start" / "left" (case-insensitive).</summary>
    public static PromptTruncation Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "middle" or "drop-middle" or "dropmiddle" => PromptTruncation.DropMiddle,
        "start" or "drop-start" or "dropstart" or "left" => PromptTruncation.DropStart,
        _ => throw new ArgumentException($"unknown prompt truncation '{name}' (expected middle or start)", nameof(name)),
    };

    /// <summary>The name <see cref="Parse"/> reads back: "middle" or "start".</summary>
    public static string Name(PromptTruncation mode) => mode switch
    {
        PromptTruncation.DropMiddle => "middle",
        PromptTruncation.DropStart => "start",
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown prompt truncation"),
    };
}
